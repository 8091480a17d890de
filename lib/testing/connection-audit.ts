import type { DataSource } from 'typeorm';
import { requireShapes } from '../compat/shape';
import { ACQUISITION_METHODS, acquiringDriver, acquisitionShapes } from '../compat/typeorm';
import { callSite, captureStack, type StackHolder } from '../core/call-site';
import { currentUnitOfWork } from '../core/current-unit-of-work';
import { type IdleGap, onIdleGap } from '../core/idle-gap-report';
import type { UnitOfWork } from '../core/unit-of-work';
import { TransactionalError } from '../errors';
import { heldDuring, isOwnAcquisition } from '../guard/hold-and-wait';

/** What one unit of work (or the code outside any) took from the pool while an audit watched. */
export interface UnitAudit {
  /** `POST /transfers`, the runner's name, or `(outside any unit of work)`. */
  readonly name: string;
  /** Successful acquisitions from the pool. */
  acquisitions: number;
  /** The most connections held at the same time. */
  maxHeld: number;
  /** Where each acquisition was made (first application frame). */
  readonly sites: string[];
}

/**
 * A connection taken inside a unit of work but not by it: through a plain `@InjectRepository()`
 * repository, the data source, its manager or a query runner of its own. It runs outside the unit's
 * transaction: it sees none of its uncommitted work and is not rolled back with it.
 */
export interface PlainAcquisition {
  /** The unit of work it was taken in: `GET /users`, or the runner's name. */
  readonly unit: string;
  /** Where it was taken (first application frame). */
  readonly site: string;
  /**
   * True when the unit of work held a connection (or was taking one) then: a guard violation, reported
   * (`'warn'`) or refused (`'throw'`, and then never recorded here). False: it went through, as the
   * guard lets it (no deadlock); it still belongs on the list of what to convert.
   */
  readonly whileHolding: boolean;
}

const OUTSIDE = '(outside any unit of work)';
type UnitRecord = UnitAudit & { held: number };

/**
 * Records, per unit of work, the connections taken from one data source's pool: how many, how many
 * at once, and which were not the unit's own (`plainAcquisitions()`). Attach it after the application
 * is initialised.
 * @example
 * const audit = ConnectionAudit.attach(app.get(DataSource));
 * await request(app.getHttpServer()).post('/transfers').send(dto);
 * audit.assertOneConnectionPerUnit();
 * audit.assertNoPlainAcquisitions();
 */
export class ConnectionAudit {
  private readonly records = new Map<UnitOfWork | typeof OUTSIDE, UnitRecord>();
  private readonly plain: PlainAcquisition[] = [];
  private readonly gaps: IdleGap[] = [];
  private readonly restore: Array<() => void> = [];

  private constructor(private readonly dataSource: DataSource) {}

  /** Starts recording acquisitions from `dataSource`'s pool. */
  static attach(dataSource: DataSource): ConnectionAudit {
    // TypeORM has no public acquisition hook: its drivers' obtain*Connection() methods are replaced.
    requireShapes(
      'ConnectionAudit.attach()',
      acquisitionShapes(dataSource, 'the audit records every pooled connection TypeORM takes through it.'),
    );
    const audit = new ConnectionAudit(dataSource);
    audit.restore.push(onIdleGap(dataSource, (gap) => audit.gaps.push(gap)));
    const driver = acquiringDriver(dataSource);
    for (const method of ACQUISITION_METHODS) {
      const original = driver[method];
      driver[method] = async function auditedAcquisition(this: unknown, ...args: unknown[]) {
        // Before the pool answers: whether the unit of work is taking its own connection is known only now,
        // and the caller's frames are still on the stack (mysql2's pool answers in a callback that has none).
        const plain = audit.plainness();
        const asked = captureStack();
        const result = await original.apply(this, args);
        return audit.acquired(result, plain, asked);
      };
      audit.restore.push(() => {
        driver[method] = original;
      });
    }
    return audit;
  }

  /** One entry per unit of work that took a connection, in order of first acquisition. */
  units(): UnitAudit[] {
    return [...this.records.values()].map(({ held: _held, ...unit }) => ({ ...unit, sites: [...unit.sites] }));
  }

  /** Units of work that took more than one connection. Empty when all is well: `expect(audit.violations()).toEqual([])`. */
  violations(): UnitAudit[] {
    return this.units().filter((unit) => unit.name !== OUTSIDE && (unit.acquisitions > 1 || unit.maxHeld > 1));
  }

  /** Throws an error listing every unit of work that took more than one connection. */
  assertOneConnectionPerUnit(): void {
    const bad = this.violations();
    if (bad.length === 0) return;
    const lines = bad.map(
      (u) => `- ${u.name}: ${u.acquisitions} acquisitions, ${u.maxHeld} held at once; taken at ${u.sites.join('; ')}`,
    );
    throw new TransactionalError(
      `${bad.length} unit(s) of work took more than one pooled connection; under load they deadlock the pool:\n${lines.join('\n')}`,
    );
  }

  /** Every connection taken inside a unit of work but not by it, in order: what to convert. */
  plainAcquisitions(): PlainAcquisition[] {
    return [...this.plain];
  }

  /**
   * `plainAcquisitions()` as a checklist, one line per call site with the units of work it ran in;
   * empty when there is none.
   * @example
   * afterAll(() => console.log(audit.checklist()));
   * // - [ ] UsersService.findAll (src/users/users.service.ts:14:31): GET /users (3), GET /users/:id (1)
   */
  checklist(): string {
    const bySite = new Map<string, { units: Map<string, number>; holding: boolean }>();
    for (const { site, unit, whileHolding } of this.plain) {
      let entry = bySite.get(site);
      if (entry === undefined) bySite.set(site, (entry = { units: new Map(), holding: false }));
      entry.units.set(unit, (entry.units.get(unit) ?? 0) + 1);
      entry.holding ||= whileHolding;
    }
    return [...bySite]
      .map(([site, { units, holding }]) => {
        const where = [...units].map(([unit, n]) => `${unit} (${n})`).join(', ');
        return `- [ ] ${site}: ${where}${holding ? '; while the unit of work held its connection (a guard violation)' : ''}`;
      })
      .join('\n');
  }

  /** Throws an error with `checklist()` when a unit of work took a connection that was not its own. */
  assertNoPlainAcquisitions(): void {
    if (this.plain.length === 0) return;
    const list = this.checklist();
    throw new TransactionalError(
      `${list.split('\n').length} call site(s) took pooled connections inside units of work, outside their ` +
        `transactions: they see none of the unit's uncommitted work and are not rolled back with it, and taken while ` +
        `the unit holds its connection they deadlock the pool under load. Run each through the unit of work ` +
        `(@InjectTxRepository(), tx.getRepository(), tx.withRepository(repository), the manager from @Tx()), or mark ` +
        `a route that needs no transaction (a health check) @NoTransaction():\n${list}`,
    );
  }

  /**
   * Every gap longer than `idleInTransactionMs` (on by default outside production) in which a unit of work
   * held its connection of this data source and ran no statement, in order: where it waited on something else.
   */
  idleGaps(): IdleGap[] {
    return [...this.gaps];
  }

  /** Throws an error listing every `idleGaps()` entry, with the statements on both sides of each gap. */
  assertNoIdleInTransaction(): void {
    if (this.gaps.length === 0) return;
    const lines = this.gaps.map(
      (g) =>
        `- ${g.unit}: ${g.idleMs} ms after the statement at ${g.before}, until ${g.atEnd ? g.after : `the statement at ${g.after}`}`,
    );
    throw new TransactionalError(
      `${this.gaps.length} time(s) a unit of work held its pooled connection idle in transaction longer than ` +
        `idleInTransactionMs, waiting on something else: while it waits no other request can use the connection, and ` +
        `a slow or unanswering service then holds every connection of the pool. Do that work before the first query, ` +
        `after the commit in TransactionHost.afterCommit(), or through an outbox row written in the transaction:\n${lines.join('\n')}`,
    );
  }

  /** Forgets what was recorded so far. */
  reset(): void {
    this.records.clear();
    this.plain.length = 0;
    this.gaps.length = 0;
  }

  /** Stops recording. */
  detach(): void {
    for (const undo of this.restore.splice(0)) undo();
  }

  /** For an acquisition starting now: undefined when it is a unit of work's own or outside any; else whether the unit holds a connection. */
  private plainness(): { whileHolding: boolean } | undefined {
    const ctx = currentUnitOfWork();
    if (ctx === undefined || ctx.state !== 'open' || isOwnAcquisition(ctx, this.dataSource)) return undefined;
    return { whileHolding: heldDuring(ctx, this.dataSource) !== undefined };
  }

  private acquired(result: unknown, plain: { whileHolding: boolean } | undefined, asked: StackHolder): unknown {
    const ctx = currentUnitOfWork();
    const key = ctx !== undefined && ctx.state !== 'committed' && ctx.state !== 'rolledBack' ? ctx : OUTSIDE;
    let record = this.records.get(key);
    if (record === undefined) {
      record = { name: key === OUTSIDE ? OUTSIDE : key.label, acquisitions: 0, maxHeld: 0, sites: [], held: 0 };
      this.records.set(key, record);
    }
    const unit = record;
    const site = callSite(asked) ?? callSite(captureStack()) ?? '(unknown)';
    unit.acquisitions += 1;
    unit.held += 1;
    unit.maxHeld = Math.max(unit.maxHeld, unit.held);
    unit.sites.push(site);
    if (plain !== undefined && key !== OUTSIDE) this.plain.push({ unit: unit.name, site, whileHolding: plain.whileHolding });
    let released = false;
    const onRelease = () => {
      if (!released) {
        released = true;
        unit.held -= 1;
      }
    };
    if (this.dataSource.options.type === 'postgres') {
      // node-postgres: [client, release]
      const [client, release] = result as [unknown, (err?: unknown) => void];
      return [client, (err?: unknown) => (onRelease(), release(err))];
    }
    // mysql2: the pool connection; release() or destroy() ends this acquisition. The own properties
    // shadow the prototype's methods for this acquisition only.
    const connection = result as { [method in 'release' | 'destroy']: () => void };
    const end = () => {
      onRelease();
      delete (connection as Partial<typeof connection>).release;
      delete (connection as Partial<typeof connection>).destroy;
    };
    connection.release = function (this: typeof connection) {
      end();
      return this.release();
    };
    connection.destroy = function (this: typeof connection) {
      end();
      return this.destroy();
    };
    return connection;
  }
}
