import type { DataSource } from 'typeorm';
import { mysql2Shapes } from './mysql2';
import { pgShapes } from './pg';
import { requireShapes, type Shape } from './shape';
import { typeormShapes } from './typeorm';

/**
 * Every private part of TypeORM and of the driver that the library reaches on `dataSource`, by its
 * type; empty for a type the library does not support (that is reported as an options error).
 */
export function compatibilityShapes(dataSource: DataSource): Shape[] {
  switch (dataSource.options.type) {
    case 'postgres':
      return [...typeormShapes(dataSource), ...pgShapes(dataSource)];
    case 'mysql':
    case 'mariadb':
      return [...typeormShapes(dataSource), ...mysql2Shapes(dataSource)];
    default:
      return [];
  }
}

/**
 * Checks, once at bootstrap and without I/O, that every private part of TypeORM and of the driver
 * that the library reaches on the initialised `dataSource` is there in the shape it assumes; throws
 * a `CompatibilityError` naming each missing one otherwise, so a TypeORM or driver upgrade fails at
 * startup instead of silently switching a protection off. `where` names the caller in the message.
 */
export function checkCompatibility(dataSource: DataSource, where: string): void {
  requireShapes(where, compatibilityShapes(dataSource));
}
