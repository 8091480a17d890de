import { Injectable } from '@nestjs/common';
import type { DataSource } from 'typeorm';
import { TransactionalOptionsError } from '../errors';
import type { ResolvedModuleOptions } from '../transactional.options';
import type { Dialect } from './dialect';

/** The name `@nestjs/typeorm` gives a data source registered without one. */
export const DEFAULT_DATA_SOURCE = 'default';

/** One data source under the library's care. */
export interface DataSourceEntry {
  readonly name: string;
  readonly dataSource: DataSource;
  readonly dialect: Dialect;
  readonly options: ResolvedModuleOptions;
  /**
   * Set by the testing kit's rollback-per-test: every connection is the test's own, already inside a
   * transaction, so a unit of work opens a SAVEPOINT instead of a transaction.
   */
  insideTestTransaction?: boolean;
}

/** Counters for the whole application. */
export interface TransactionalStats {
  /** Second-connection acquisitions seen by the guard, whatever its mode. */
  guardViolations: number;
}

/** The data sources registered by `TransactionalModule.forRoot()` calls of one application. */
@Injectable()
export class DataSourceRegistry {
  private readonly entries = new Map<string, DataSourceEntry>();
  readonly stats: TransactionalStats = { guardViolations: 0 };
  /** Call sites already reported in `'warn'` mode: each is logged once. */
  readonly reportedSites = new Set<string>();

  register(entry: DataSourceEntry): void {
    if (this.entries.has(entry.name)) {
      throw new TransactionalOptionsError(
        `TransactionalModule.forRoot() was called twice for data source '${entry.name}'. Call it once per data source.`,
      );
    }
    this.entries.set(entry.name, entry);
  }

  has(entry: DataSourceEntry): boolean {
    return this.entries.get(entry.name) === entry;
  }

  /** The entry of a data source, or an error that lists the registered ones. */
  get(name: string, use: string): DataSourceEntry {
    const entry = this.entries.get(name);
    if (entry) return entry;
    const known = [...this.entries.keys()].map((n) => `'${n}'`).join(', ') || 'none';
    throw new TransactionalOptionsError(
      `${use} asked for data source '${name}', which TransactionalModule does not manage (registered: ${known}). ` +
        `Add TransactionalModule.forRoot({ dataSource: '${name}' }) or fix the name.`,
    );
  }
}
