import { createParamDecorator } from '@nestjs/common';
import { txParam } from '../http/tx-param';
import { checkDataSourceName } from '../repository/tx-repository';

const TxParam = createParamDecorator(txParam);

/**
 * The request transaction's `EntityManager` (of the named data source, default `'default'`).
 * Every query through it runs on the request's one connection. A name that is not a non-empty string
 * throws where the class is declared.
 * @example
 * @Post()
 * create(@Body() dto: TransferDto, @Tx() tx: EntityManager) {
 *   return this.transfers.create(tx, dto);
 * }
 */
export function Tx(dataSource?: string): ParameterDecorator {
  if (dataSource === undefined) return TxParam();
  checkDataSourceName(dataSource, '@Tx()');
  return TxParam(dataSource);
}
