import { GraphQLOperation } from './graphql-operation';
import { type MutableResult, settleResult } from './operation-result';
import { UNIT_OF_WORK_PLUGIN } from './apollo-plugin';

/** What the hooks read of Mercurius's context, structurally: `mercurius` is no dependency. */
interface MercuriusContext {
  readonly reply?: { code(statusCode: number): unknown };
}

/** Mercurius hooks (`MercuriusHooksObject`), typed structurally. */
export interface MercuriusUnitOfWorkHooks {
  preExecution(schema: unknown, document: unknown, context: MercuriusContext): Promise<void>;
  onResolution(execution: MutableResult, context: MercuriusContext): Promise<void>;
}

/**
 * The Mercurius hooks that give each GraphQL operation a unit of work and end it before its response
 * is sent: COMMIT when the result has no error, ROLLBACK otherwise. One per operation of a batch.
 * @example
 * GraphQLModule.forRoot<MercuriusDriverConfig>({
 *   driver: MercuriusDriver,
 *   autoSchemaFile: true,
 *   fieldResolverEnhancers: ['interceptors'],
 *   hooks: mercuriusUnitOfWorkHooks(),
 * });
 */
export function mercuriusUnitOfWorkHooks(): MercuriusUnitOfWorkHooks {
  const preExecution = async (_schema: unknown, _document: unknown, context: MercuriusContext): Promise<void> => {
    GraphQLOperation.start(context);
  };
  const onResolution = async (execution: MutableResult, context: MercuriusContext): Promise<void> => {
    const operation = GraphQLOperation.of(context);
    if (operation !== undefined && (await settleResult(operation, execution))) context.reply?.code(500);
  };
  return { preExecution: Object.assign(preExecution, { [UNIT_OF_WORK_PLUGIN]: true }), onResolution };
}
