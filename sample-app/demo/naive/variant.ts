import type { Type } from '@nestjs/common';
import { AppModule } from '../../src/app.module';
import { NaiveAppModule } from './naive-app.module';

/**
 * Which controllers serve the routes that touch the database in a transaction:
 * - `'library'`: TransactionalModule's request transaction (`@Tx()`, `@InjectTxRepository`, `lockInOrder`);
 * - `'naive'`: the same routes written the way the seeds describe, without the library's help: a
 *   hand-made QueryRunner transaction per request with a second query on another pooled connection
 *   inside it, locks taken in request order, a report without a snapshot.
 */
export type Variant = 'library' | 'naive';

export const VARIANTS: readonly Variant[] = ['library', 'naive'];

/** The root module of each variant, for `bootstrap({ module })`. */
export const VARIANT_MODULES: Readonly<Record<Variant, Type<unknown>>> = { library: AppModule, naive: NaiveAppModule };
