import { createParamDecorator } from '@nestjs/common';
import { txParam } from '../http/tx-param';

/**
 * The request transaction's `EntityManager` (of the named data source, default `'default'`).
 * Every query through it runs on the request's one connection.
 * @example
 * @Post()
 * create(@Body() dto: TransferDto, @Tx() tx: EntityManager) {
 *   return this.transfers.create(tx, dto);
 * }
 */
export const Tx = createParamDecorator(txParam);
