import { Injectable, type OnApplicationBootstrap } from '@nestjs/common';
import { ModuleRef } from '@nestjs/core';
import { TransactionalOptionsError } from '../errors';
import { UNIT_OF_WORK_PLUGIN } from './apollo-plugin';

/** What the check reads of `GraphQLModule`'s options (`GqlModuleOptions`), structurally. */
interface GraphQLModuleOptions {
  fieldResolverEnhancers?: readonly string[];
  plugins?: readonly unknown[];
  hooks?: { preExecution?: unknown };
}

/**
 * Fails the bootstrap of an app whose `GraphQLModule` would run resolvers without a unit of work per
 * operation: the server's hook missing (nothing would commit before the response), or field resolvers
 * without interceptors (a `@ResolveField` would run outside the operation's transaction and take a
 * second pooled connection while the operation holds one). Apps without `@nestjs/graphql` pass.
 */
@Injectable()
export class GraphQLSetupCheck implements OnApplicationBootstrap {
  constructor(private readonly moduleRef: ModuleRef) {}

  onApplicationBootstrap(): void {
    const options = this.graphQLOptions();
    if (options === undefined) return;
    const missing: string[] = [];
    if (!hasHook(options)) {
      missing.push(
        'the server hook: plugins: [apolloUnitOfWorkPlugin()] (Apollo) or hooks: mercuriusUnitOfWorkHooks() (Mercurius)',
      );
    }
    if (!(options.fieldResolverEnhancers ?? []).includes('interceptors')) {
      missing.push(
        `fieldResolverEnhancers: ['interceptors'], so that @ResolveField() resolvers run in the operation's unit of work`,
      );
    }
    if (missing.length === 0) return;
    throw new TransactionalOptionsError(
      `GraphQLModule.forRoot() lacks ${missing.join(', and ')}. TransactionalModule gives each GraphQL operation one unit ` +
        `of work, committed before its response is sent; without these, resolvers would run outside it and take ` +
        `a second pooled connection while it holds one. Add them to the GraphQLModule options, or bind the ` +
        `interceptor yourself with TransactionalModule.forRoot({ mount: false }).`,
    );
  }

  /** The app's GraphQLModule options, through the token `@nestjs/graphql` exports; undefined without one. */
  private graphQLOptions(): GraphQLModuleOptions | undefined {
    let token: string | undefined;
    try {
      // Optional: the package loads and runs without @nestjs/graphql.
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      token = (require('@nestjs/graphql') as { GRAPHQL_MODULE_OPTIONS?: string }).GRAPHQL_MODULE_OPTIONS;
    } catch {
      return undefined;
    }
    if (token === undefined) return undefined;
    try {
      return this.moduleRef.get<GraphQLModuleOptions>(token, { strict: false });
    } catch {
      return undefined;
    }
  }
}

function hasHook(options: GraphQLModuleOptions): boolean {
  const marked = (value: unknown) =>
    typeof value === 'object' || typeof value === 'function' ? value !== null && UNIT_OF_WORK_PLUGIN in value : false;
  if (options.plugins?.some(marked) === true) return true;
  const pre = options.hooks?.preExecution;
  return Array.isArray(pre) ? pre.some(marked) : marked(pre);
}
