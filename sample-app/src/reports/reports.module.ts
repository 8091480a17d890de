import { type DynamicModule, Module } from '@nestjs/common';
import { TransactionalModule } from 'nestjs-request-transaction';
import { Account } from '../accounts/account.entity';
import type { Variant } from '../common/variant';
import { NaiveReportsController } from './naive-reports.controller';
import { ReportsController } from './reports.controller';
import { ReportsService } from './reports.service';

@Module({
  imports: [TransactionalModule.forFeature([Account])],
  providers: [ReportsService],
})
export class ReportsModule {
  /** `GET /reports/balances`, served by the variant's controller. */
  static forVariant(variant: Variant): DynamicModule {
    return { module: ReportsModule, controllers: [variant === 'naive' ? NaiveReportsController : ReportsController] };
  }
}
