/**
 * The module bound per controller (variant `module-per-controller`): `TransactionalModule.forRoot({
 * mount: false })` binds no global interceptor, the database routes' controller carries
 * `@UseInterceptors(TransactionInterceptor)`, and the route without a database lives in a controller
 * without it: that route runs no interceptor at all, as in the hand-written app.
 */
import { Body, Controller, Get, HttpCode, Post, Query, type Type, UseInterceptors } from '@nestjs/common';
import type { EntityManager } from 'typeorm';
import { loadLibrary } from './library';
import { balances, reposOf, transfer, type TransferDto } from './units';

export function perControllerControllers(): Type[] {
  const { Tx, TransactionInterceptor } = loadLibrary();

  @Controller()
  @UseInterceptors(TransactionInterceptor)
  class TransfersController {
    @Post('transfer')
    @HttpCode(200)
    transfer(@Body() dto: TransferDto, @Tx() tx: EntityManager): Promise<{ id: number }> {
      return transfer(reposOf(tx), dto);
    }

    @Get('balances')
    balances(@Query('from') from: string, @Query('to') to: string, @Tx() tx: EntityManager): Promise<unknown> {
      return balances(reposOf(tx), from, to);
    }
  }

  @Controller()
  class HealthController {
    @Get('ping')
    ping(): { ok: boolean } {
      return { ok: true };
    }
  }

  return [TransfersController, HealthController];
}
