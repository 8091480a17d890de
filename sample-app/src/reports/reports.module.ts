import { Module } from '@nestjs/common';
import { TransactionalModule } from 'nestjs-request-transaction';
import { Account } from '../accounts/account.entity';
import { ReportsController } from './reports.controller';
import { ReportsService } from './reports.service';

@Module({
  imports: [TransactionalModule.forFeature([Account])],
  controllers: [ReportsController],
  providers: [ReportsService],
  exports: [ReportsService],
})
export class ReportsModule {}
