import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { CompatibilityError } from '../errors';

/** A package whose private parts the library reaches. */
export type ShapePackage = 'typeorm' | 'pg' | 'mysql2';

/**
 * One private part of TypeORM or a driver that the library relies on: what it is, which versions
 * it was written against, what the library does with it, and a check that it is there. Checks run
 * at bootstrap, without I/O; the code that uses the part then reaches it directly.
 */
export interface Shape {
  readonly package: ShapePackage;
  /** The versions the access was written against, e.g. `TypeORM 0.3.20 to 0.3.28 and 1.1`. */
  readonly writtenFor: string;
  /** The part, as code: `PostgresDriver.obtainMasterConnection()`. */
  readonly name: string;
  /** What the library does with it, so the message can say what would break. */
  readonly use: string;
  /** True when the part is there with the shape the library assumes. A throw counts as absent. */
  readonly present: () => boolean;
}

/** TypeORM versions the accessors in `lib/compat/typeorm.ts` were read from. */
export const TYPEORM_VERSIONS = 'TypeORM 0.3.20 to 0.3.28 and 1.1';
/** pg (and its pg-pool) versions the accessors in `lib/compat/pg.ts` were read from. */
export const PG_VERSIONS = 'pg 8.16 with pg-pool 3.10 to 3.14';
/** mysql2 versions the accessors in `lib/compat/mysql2.ts` were read from. */
export const MYSQL2_VERSIONS = 'mysql2 3.15';

/** The shapes of `shapes` that are not there. */
export function missingShapes(shapes: readonly Shape[]): Shape[] {
  return shapes.filter((shape) => {
    try {
      return !shape.present();
    } catch {
      return true;
    }
  });
}

/**
 * Throws a `CompatibilityError` naming every shape of `shapes` that is not there. `where` names the
 * caller (`TransactionalModule.forRoot()`, `ConnectionAudit.attach()`).
 */
export function requireShapes(where: string, shapes: readonly Shape[]): void {
  const missing = missingShapes(shapes);
  if (missing.length > 0) throw compatibilityError(where, missing);
}

function compatibilityError(where: string, missing: readonly Shape[]): CompatibilityError {
  const lines = missing.map((shape) => {
    const installed = installedVersion(shape.package);
    return (
      `- ${shape.name} (${shape.package}; written against ${shape.writtenFor}` +
      `${installed === undefined ? '' : `, installed: ${installed}`}): ${shape.use}`
    );
  });
  const names = [...new Set(missing.map((shape) => shape.package))];
  const packages = names.join(' and ');
  const one = missing.length === 1;
  return new CompatibilityError(
    `${where} cannot work with the installed ${packages}: the library reaches ${one ? 'a part' : 'parts'} of ${names.length === 1 ? 'it' : 'them'} ` +
      `that ${one ? 'has' : 'have'} no public interface, and ${one ? 'it is' : 'they are'} not there, or not in the ` +
      `shape the library assumes:\n${lines.join('\n')}\nWithout ${one ? 'it' : 'them'} the library would silently ` +
      `stop doing what is listed. Install a version the library supports (see the README's supported stack), or ` +
      `report an issue to nestjs-request-transaction naming the installed versions.`,
    missing.map((shape) => shape.name),
  );
}

/**
 * The version of `name` that this library resolves, read from its package.json; undefined when it
 * cannot be found. Only for messages: packages that list exports do not always export package.json.
 */
export function installedVersion(name: string): string | undefined {
  try {
    let dir = dirname(require.resolve(name));
    for (;;) {
      try {
        const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
        if (pkg.name === name) return pkg.version;
      } catch {
        // No package.json at this level: look further up.
      }
      const parent = dirname(dir);
      if (parent === dir) return undefined;
      dir = parent;
    }
  } catch {
    return undefined;
  }
}
