import { Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { TransactionalModule } from 'nestjs-request-transaction';
import { Account } from './account.entity';
import { AccountsController } from './accounts.controller';
import { AccountsService } from './accounts.service';

@Module({
  imports: [
    TypeOrmModule.forRoot({
      type: 'postgres', // or 'mysql' / 'mariadb', with connectTimeout instead of connectTimeoutMS
      url: process.env.DATABASE_URL,
      poolSize: 10,
      connectTimeoutMS: 5000, // an exhausted pool answers with an error instead of hanging
      autoLoadEntities: true, // loads the entities of TransactionalModule.forFeature() below
      synchronize: true, // creates the table: for trying it out, not for production
    }),
    TransactionalModule.forRoot(), // one transaction per request, the guard on outside production
    TransactionalModule.forFeature([Account]), // for @InjectTxRepository(Account)
  ],
  controllers: [AccountsController],
  providers: [AccountsService],
})
export class AppModule {}
