/**
 * typeorm-transactional (0.5), set up as its README shows for NestJS: `initializeTransactionalContext()`
 * before the app is created, the data source registered with `addTransactionalDataSource()` from
 * `TypeOrmModule`'s `dataSourceFactory`, `@Transactional()` on the service methods, and plain
 * `@InjectRepository()` repositories, which the library redirects to the current transaction.
 *
 * Storage driver: `StorageDriver.ASYNC_LOCAL_STORAGE`, as the README's own setup example passes; its
 * default is still `CLS_HOOKED` "for backward compatibility", to become `AUTO` (which picks
 * AsyncLocalStorage on Node 16 and later). The legacy default is the opt-in variant
 * `typeorm-transactional-cls-hooked`.
 *
 * Only the process of this variant loads this file: initialising the library patches TypeORM's
 * `Repository` and `EntityManager` prototypes.
 */
import { type DynamicModule, Injectable, Module } from '@nestjs/common';
import { InjectRepository, TypeOrmModule, type TypeOrmModuleOptions } from '@nestjs/typeorm';
import { DataSource, Repository } from 'typeorm';
import { addTransactionalDataSource, initializeTransactionalContext, StorageDriver, Transactional } from 'typeorm-transactional';
import { Account, Transfer } from './entities';
import { peerController } from './peer-controller';
import { balances, type Repos, transfer, type TransferDto } from './units';

@Injectable()
class TransfersService {
  private readonly repos: Repos;

  constructor(
    @InjectRepository(Account) accounts: Repository<Account>,
    @InjectRepository(Transfer) transfers: Repository<Transfer>,
  ) {
    this.repos = { accounts, transfers };
  }

  @Transactional()
  transfer(dto: TransferDto): Promise<{ id: number }> {
    return transfer(this.repos, dto);
  }

  @Transactional()
  balances(from: string, to: string): Promise<unknown> {
    return balances(this.repos, from, to);
  }
}

@Module({})
class TypeormTransactionalBenchModule {}

export function typeormTransactionalModule(typeOrmOptions: TypeOrmModuleOptions, storage: 'als' | 'cls-hooked'): DynamicModule {
  // "Calling initializeTransactionalContext must happen BEFORE any application context is initialized."
  initializeTransactionalContext(storage === 'als' ? { storageDriver: StorageDriver.ASYNC_LOCAL_STORAGE } : undefined);
  return {
    module: TypeormTransactionalBenchModule,
    imports: [
      TypeOrmModule.forRootAsync({
        useFactory: () => typeOrmOptions,
        dataSourceFactory: async (options) => {
          if (!options) throw new Error('TypeORM options are missing');
          return addTransactionalDataSource(new DataSource(options));
        },
      }),
      TypeOrmModule.forFeature([Account, Transfer]),
    ],
    controllers: [peerController(TransfersService)],
    providers: [TransfersService],
  };
}
