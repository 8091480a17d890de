import { Body, Controller, Get, HttpCode, Inject, Post, Query, type Type } from '@nestjs/common';
import type { TransferDto } from './units';

/** What a peer's service offers the routes: its `@Transactional()` methods. */
export interface TransfersService {
  transfer(dto: TransferDto): Promise<{ id: number }>;
  balances(from: string, to: string): Promise<unknown>;
}

/**
 * The routes of a peer's app: each delegates to the peer's service, whose `@Transactional()` methods
 * hold the transaction. Both peers are written this way, as their docs show.
 */
export function peerController(service: Type<TransfersService>): Type {
  @Controller()
  class PeerController {
    constructor(@Inject(service) private readonly transfers: TransfersService) {}

    @Post('transfer')
    @HttpCode(200)
    transfer(@Body() dto: TransferDto): Promise<{ id: number }> {
      return this.transfers.transfer(dto);
    }

    @Get('balances')
    balances(@Query('from') from: string, @Query('to') to: string): Promise<unknown> {
      return this.transfers.balances(from, to);
    }

    /** No `@Transactional()` here: the peers' transactions are per method, where database work is. */
    @Get('ping')
    ping(): { ok: boolean } {
      return { ok: true };
    }
  }
  return PeerController;
}
