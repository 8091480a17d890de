import type { UnitOfWork } from '../core/unit-of-work';
import type { UnitOfWorkOwner } from '../core/unit-of-work-owner';
import type { TransactionRunner } from '../core/transaction-runner';
import type { TransactionOptions } from '../transactional.options';

/** What a resolver's `info.operation` tells (graphql-js's `OperationDefinitionNode`), read structurally. */
export interface OperationNode {
  readonly operation: string;
  readonly name?: { readonly value: string } | null;
}

/** How an operation ended, as its server's response hook sees it. */
export interface OperationEnd {
  /** The result carries errors: the unit of work rolls back. */
  readonly failed: boolean;
}

/** The value the operation's work is rejected with when its result carried errors: not an error of the work. */
const FAILED = new Error('the GraphQL result carried errors');

/**
 * Operations by their GraphQL context object. The server creates one context object per operation
 * (Apollo copies it for each operation of a batch, Mercurius derives one per operation), and hands the
 * same object to the operation's every resolver: the key that ties root and field resolvers to one unit
 * of work. Weak: an operation the server drops never ends here and is collected with its context.
 */
const operations = new WeakMap<object, GraphQLOperation>();

/**
 * One GraphQL operation as a unit of work. The server plugin starts it when execution begins; the
 * first resolver that needs it opens its unit of work (no connection yet: lazy, as everywhere); every
 * resolver of the operation runs inside it; the plugin ends it before the response is sent.
 */
export class GraphQLOperation implements UnitOfWorkOwner {
  /** `mutation createOrder`, once a resolver told it. */
  private name = 'GraphQL operation';
  private kind?: string;
  private unitOfWork?: UnitOfWork;
  private result?: unknown;
  private finish?: (end: OperationEnd) => void;
  private routeSites?: Map<string, string | null>;

  /** Starts the operation of `context`: its resolvers will find it. Called once per operation by the server hook. */
  static start(context: object): GraphQLOperation {
    let operation = operations.get(context);
    if (operation === undefined) operations.set(context, (operation = new GraphQLOperation()));
    return operation;
  }

  /** The operation whose context a resolver received, if the server hook started one. */
  static of(context: unknown): GraphQLOperation | undefined {
    return typeof context === 'object' && context !== null ? operations.get(context) : undefined;
  }

  /** `query`, `mutation`: known once a resolver ran. */
  get type(): string | undefined {
    return this.kind;
  }

  /**
   * The operation's unit of work, opened by its first resolver with that resolver's options (retry
   * excluded: resolvers that already ran cannot run again). Later resolvers join it.
   */
  join(
    runner: TransactionRunner,
    options: TransactionOptions,
    sites: Map<string, string | null>,
    node: OperationNode | undefined,
  ): UnitOfWork {
    if (this.unitOfWork !== undefined) return this.unitOfWork;
    if (node !== undefined) {
      this.kind = node.operation;
      this.name = `${node.operation} ${node.name?.value ?? '(anonymous)'}`;
    }
    this.routeSites = sites;
    // The work is the operation itself: pending until its server ends it. execute() enters it at once.
    this.result = runner.execute({ ...options, retry: false }, this);
    return this.unitOfWork!;
  }

  attempt(unitOfWork: UnitOfWork): Promise<void> {
    this.unitOfWork = unitOfWork;
    return new Promise<void>((resolve, reject) => {
      this.finish = (end) => (end.failed ? reject(FAILED) : resolve());
    });
  }

  canRetry(): boolean {
    return false;
  }

  get sites(): Map<string, string | null> | undefined {
    return this.routeSites;
  }

  describe(): string {
    return this.name;
  }

  /**
   * Ends the operation once: COMMIT when its result carried no error, ROLLBACK otherwise. Resolves
   * when the unit of work settled, with the error the client must learn of (a failed COMMIT), if any.
   * An operation none of whose resolvers opened a unit of work has nothing to end.
   */
  async end(end: OperationEnd): Promise<{ committed: boolean; error?: unknown }> {
    const finish = this.finish;
    if (finish === undefined) return { committed: !end.failed };
    this.finish = undefined;
    finish(end);
    try {
      await this.result;
      return { committed: true };
    } catch (error) {
      // A failed result already tells the client why; what the rollback met on the way is the log's.
      return end.failed ? { committed: false } : { committed: false, error };
    }
  }
}
