import { Controller, Get, Query } from '@nestjs/common';
import { Transactional } from 'nestjs-request-transaction';
import { IdListPipe } from '../../src/reports/id-list.pipe';
import { type BalanceReport, ReportsService } from '../../src/reports/reports.service';

/**
 * The naive variant's report (seed 004's first fix): a transaction, but READ COMMITTED, where each
 * SELECT sees what was committed when it started. A transfer that commits between two reads is half
 * in the report: money appears or vanishes (read skew).
 */
@Controller('reports')
export class NaiveReportsController {
  constructor(private readonly reports: ReportsService) {}

  @Get('balances')
  @Transactional({ isolationLevel: 'READ COMMITTED', readOnly: true })
  balances(@Query('accounts', IdListPipe) ids?: number[]): Promise<BalanceReport> {
    return this.reports.balances(ids);
  }
}
