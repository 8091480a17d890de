import { GraphQLOperation } from './graphql-operation';
import { type MutableResult, settleResult } from './operation-result';

/** What the plugin reads of Apollo Server's request context, structurally: `@apollo/server` is no dependency. */
interface ApolloRequestContext {
  readonly contextValue: object;
}

/** What the plugin reads and changes of Apollo Server's response, before it is sent. */
interface ApolloResponseContext extends ApolloRequestContext {
  readonly response: {
    readonly body: { readonly kind: string; readonly singleResult?: MutableResult };
    readonly http: { status?: number };
  };
}

/** An Apollo Server plugin (`ApolloServerPlugin`), typed structurally. */
export interface ApolloUnitOfWorkPlugin {
  requestDidStart(requestContext: ApolloRequestContext): Promise<{
    willSendResponse(requestContext: ApolloResponseContext): Promise<void>;
  }>;
}

/** Marks the plugin for the bootstrap check of the GraphQL module's options. */
export const UNIT_OF_WORK_PLUGIN = Symbol.for('nestjs-request-transaction:graphql-plugin');

/**
 * The Apollo Server plugin that ends each GraphQL operation's unit of work before its response is
 * sent: COMMIT when the result has no error, ROLLBACK otherwise. One per operation of a batched request.
 * @example
 * GraphQLModule.forRoot<ApolloDriverConfig>({
 *   driver: ApolloDriver,
 *   autoSchemaFile: true,
 *   fieldResolverEnhancers: ['interceptors'],
 *   plugins: [apolloUnitOfWorkPlugin()],
 * });
 */
export function apolloUnitOfWorkPlugin(): ApolloUnitOfWorkPlugin {
  return Object.assign(
    {
      async requestDidStart(requestContext: ApolloRequestContext) {
        const operation = GraphQLOperation.start(requestContext.contextValue);
        return {
          async willSendResponse({ response }: ApolloResponseContext): Promise<void> {
            // Incremental delivery (@defer) sends its first part now: that part's result decides.
            const result = response.body.singleResult ?? {};
            if (await settleResult(operation, result)) response.http.status = 500;
          },
        };
      },
    },
    { [UNIT_OF_WORK_PLUGIN]: true },
  );
}
