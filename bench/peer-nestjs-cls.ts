/**
 * @nestjs-cls/transactional (3.3) with its TypeORM adapter (1.4) on nestjs-cls (6.3), set up as their
 * docs show: `ClsModule.forRoot({ global: true, middleware: { mount: true }, plugins: [...] })` (the CLS
 * middleware is nestjs-cls's preferred way to open the context for HTTP, tested with Express and
 * Fastify), the `ClsPluginTransactional` with a `TransactionalAdapterTypeOrm` on `getDataSourceToken()`,
 * `@Transactional()` on the service methods, and every query through `TransactionHost.tx` (an
 * `EntityManager`: the adapter deliberately patches nothing, so repositories come from it).
 *
 * Opt-in variant `nestjs-cls-no-middleware`: the same without the middleware; `@Transactional()` then
 * opens the CLS context itself, and routes without it run outside any context.
 */
import { type DynamicModule, Injectable, Module } from '@nestjs/common';
import { getDataSourceToken, TypeOrmModule, type TypeOrmModuleOptions } from '@nestjs/typeorm';
import { ClsPluginTransactional, Transactional, TransactionHost } from '@nestjs-cls/transactional';
import { TransactionalAdapterTypeOrm } from '@nestjs-cls/transactional-adapter-typeorm';
import { ClsModule } from 'nestjs-cls';
import { peerController } from './peer-controller';
import { balances, reposOf, transfer, type TransferDto } from './units';

@Injectable()
class TransfersService {
  constructor(private readonly txHost: TransactionHost<TransactionalAdapterTypeOrm>) {}

  @Transactional()
  transfer(dto: TransferDto): Promise<{ id: number }> {
    return transfer(reposOf(this.txHost.tx), dto);
  }

  @Transactional()
  balances(from: string, to: string): Promise<unknown> {
    return balances(reposOf(this.txHost.tx), from, to);
  }
}

@Module({})
class NestjsClsBenchModule {}

export function nestjsClsModule(typeOrmOptions: TypeOrmModuleOptions, { middleware }: { middleware: boolean }): DynamicModule {
  return {
    module: NestjsClsBenchModule,
    imports: [
      TypeOrmModule.forRoot(typeOrmOptions),
      ClsModule.forRoot({
        global: true,
        ...(middleware ? { middleware: { mount: true } } : {}),
        plugins: [
          new ClsPluginTransactional({
            imports: [TypeOrmModule],
            adapter: new TransactionalAdapterTypeOrm({ dataSourceToken: getDataSourceToken() }),
          }),
        ],
      }),
    ],
    controllers: [peerController(TransfersService)],
    providers: [TransfersService],
  };
}
