'use strict';
// The smoke app's modules and controllers, for checks.cjs. Plain JavaScript: decorators are applied by
// hand (decorate() and param() below), as TypeScript's emitted code applies them.
const TABLE = 'compat_smoke_items';
const ON_PURPOSE = 'failed on purpose, after its write';

/** A Nest app of `module` on Express or Fastify, whose logged errors go to `logged` (quoted by FAIL lines). */
async function createApp(env, adapter, module, logged) {
  const { core, platformFastify } = env;
  const logger = {
    log() {},
    warn() {},
    debug() {},
    verbose() {},
    fatal: (message) => logged.push(String(message)),
    // The error and where it was thrown: enough to tell a FAIL's cause, short enough for the table.
    error: (message, stack) => {
      const frame = String(stack ?? '')
        .split('\n')
        .find((line) => line.trim().startsWith('at '));
      logged.push(`${String(message).slice(0, 400)}${frame ? ` (${frame.trim()})` : ''}`);
    },
  };
  return adapter === 'fastify'
    ? core.NestFactory.create(module, new platformFastify.FastifyAdapter(), { logger })
    : core.NestFactory.create(module, { logger });
}

function dataSourceOptions(env, Item) {
  return { type: 'postgres', url: env.url, poolSize: 1, connectTimeoutMS: 2000, entities: [Item], synchronize: true };
}

/**
 * The app every check runs against: one controller per style (@Tx(), transactional and plain
 * repositories), a request-scoped controller, a microservice controller; forRoot() mounts the hook.
 */
function defineApp(env) {
  const { common, nestTypeorm, typeorm, lib, microservices } = env;
  const Item = new typeorm.EntitySchema({
    name: 'CompatSmokeItem',
    tableName: TABLE,
    columns: { id: { type: Number, primary: true, generated: true }, name: { type: String } },
  });
  const held = heldRequest();

  class ItemsController {
    constructor(items, plain, host) {
      this.items = items;
      this.plain = plain;
      this.host = host;
    }
    commit(name, tx) {
      return tx.getRepository(Item).save({ name });
    }
    async rollback(name) {
      await this.items.save({ name });
      throw new common.ConflictException(ON_PURPOSE);
    }
    async guard() {
      const counted = (await this.items.count()) >= 0;
      try {
        await this.plain.count();
        return { counted, caught: 'nothing' };
      } catch (error) {
        return { counted, caught: error instanceof lib.NestedConnectionError ? 'NestedConnectionError' : errorText(error) };
      }
    }
    async hold(name, tx) {
      await tx.getRepository(Item).save({ name });
      this.host.afterRollback(() => held.rollback());
      held.insert();
      await held.released;
      try {
        await tx.query('SELECT 1');
        held.finish('ran');
      } catch (error) {
        held.finish(error instanceof lib.TransactionFinishedError ? 'TransactionFinishedError' : errorText(error));
      }
    }
  }
  decorate(ItemsController, 'commit', common.Post('commit/:name'));
  param(ItemsController, 'commit', 0, common.Param('name'));
  param(ItemsController, 'commit', 1, lib.Tx());
  decorate(ItemsController, 'rollback', common.Post('rollback/:name'));
  param(ItemsController, 'rollback', 0, common.Param('name'));
  decorate(ItemsController, 'guard', common.Post('guard'));
  decorate(ItemsController, 'hold', common.Post('hold/:name'));
  param(ItemsController, 'hold', 0, common.Param('name'));
  param(ItemsController, 'hold', 1, lib.Tx());
  param(ItemsController, undefined, 0, lib.InjectTxRepository(Item));
  param(ItemsController, undefined, 1, nestTypeorm.InjectRepository(Item));
  param(ItemsController, undefined, 2, common.Inject(lib.TransactionHost));
  common.Controller('items')(ItemsController);

  class ScopedController {
    static instances = 0;
    constructor(items) {
      this.items = items;
      ScopedController.instances++;
    }
    commit(name) {
      return this.items.save({ name });
    }
    async rollback(name) {
      await this.items.save({ name });
      throw new common.ConflictException(ON_PURPOSE);
    }
  }
  decorate(ScopedController, 'commit', common.Post('commit/:name'));
  param(ScopedController, 'commit', 0, common.Param('name'));
  decorate(ScopedController, 'rollback', common.Post('rollback/:name'));
  param(ScopedController, 'rollback', 0, common.Param('name'));
  param(ScopedController, undefined, 0, lib.InjectTxRepository(Item));
  common.Controller({ path: 'scoped', scope: common.Scope.REQUEST })(ScopedController);

  class MessagesController {
    constructor(items) {
      this.items = items;
    }
    create(data) {
      return this.items.save({ name: data.name });
    }
    async fail(data) {
      await this.items.save({ name: data.name });
      throw new microservices.RpcException(ON_PURPOSE);
    }
  }
  decorate(MessagesController, 'create', microservices.MessagePattern('items.create'));
  param(MessagesController, 'create', 0, microservices.Payload());
  decorate(MessagesController, 'fail', microservices.MessagePattern('items.fail'));
  param(MessagesController, 'fail', 0, microservices.Payload());
  param(MessagesController, undefined, 0, lib.InjectTxRepository(Item));
  common.Controller()(MessagesController);

  class AppModule {}
  common.Module({
    imports: [
      nestTypeorm.TypeOrmModule.forRoot(dataSourceOptions(env, Item)),
      nestTypeorm.TypeOrmModule.forFeature([Item]),
      lib.TransactionalModule.forRoot({ guard: 'throw' }),
      lib.TransactionalModule.forFeature([Item]),
    ],
    controllers: [ItemsController, ScopedController, MessagesController],
  })(AppModule);

  return { AppModule, Item, ScopedController, held };
}

/** forRoot({ mount: false }): the interceptor bound on ManualController only, not on UnboundController. */
function defineManualApp(env, Item) {
  const { common, nestTypeorm, lib } = env;
  class ManualController {
    constructor(items) {
      this.items = items;
    }
    bound(name) {
      return this.items.save({ name });
    }
  }
  decorate(ManualController, 'bound', common.Post('bound/:name'));
  param(ManualController, 'bound', 0, common.Param('name'));
  param(ManualController, undefined, 0, lib.InjectTxRepository(Item));
  common.UseInterceptors(lib.TransactionInterceptor)(ManualController);
  common.Controller('manual')(ManualController);

  class UnboundController {
    constructor(items) {
      this.items = items;
    }
    write(name) {
      return this.items.save({ name });
    }
  }
  decorate(UnboundController, 'write', common.Post(':name'));
  param(UnboundController, 'write', 0, common.Param('name'));
  param(UnboundController, undefined, 0, lib.InjectTxRepository(Item));
  common.Controller('unbound')(UnboundController);

  class ManualModule {}
  common.Module({
    imports: [
      nestTypeorm.TypeOrmModule.forRoot(dataSourceOptions(env, Item)),
      lib.TransactionalModule.forRoot({ guard: 'throw', mount: false }),
      lib.TransactionalModule.forFeature([Item]),
    ],
    controllers: [ManualController, UnboundController],
  })(ManualModule);
  return ManualModule;
}

/** The held route's steps, for the client-disconnect check. */
function heldRequest() {
  const held = { client: new AbortController() };
  held.inserted = new Promise((resolve) => (held.insert = resolve));
  held.rolledBack = new Promise((resolve) => (held.rollback = resolve));
  held.released = new Promise((resolve) => (held.release = resolve));
  held.after = new Promise((resolve) => (held.finish = resolve));
  return held;
}

/** A method decorator (or several), applied as TypeScript's emitted code would. */
function decorate(Class, method, ...decorators) {
  const descriptor = Object.getOwnPropertyDescriptor(Class.prototype, method);
  for (const decorator of decorators) decorator(Class.prototype, method, descriptor);
}

/** A parameter decorator: of a method, or of the constructor when `method` is undefined. */
function param(Class, method, index, decorator) {
  decorator(method === undefined ? Class : Class.prototype, method, index);
}

function errorText(error) {
  return error instanceof Error ? `${error.name}: ${error.message.split('\n')[0]}` : String(error);
}

module.exports = { TABLE, ON_PURPOSE, createApp, defineApp, defineManualApp };
