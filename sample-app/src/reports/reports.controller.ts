import { Controller, Get, Query } from '@nestjs/common';
import { Transactional } from 'nestjs-request-transaction';
import { IdListPipe } from './id-list.pipe';
import { type BalanceReport, ReportsService } from './reports.service';

@Controller('reports')
export class ReportsController {
  constructor(private readonly reports: ReportsService) {}

  /**
   * Every read of the report sees the same snapshot (taken at its first query), so the total adds up
   * however many transfers commit meanwhile; read only: the database refuses writes.
   */
  @Get('balances')
  @Transactional({ isolationLevel: 'REPEATABLE READ', readOnly: true })
  balances(@Query('accounts', IdListPipe) ids?: number[]): Promise<BalanceReport> {
    return this.reports.balances(ids);
  }
}
