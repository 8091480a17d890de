// A consumer of the package's three entry points, type-checked under every moduleResolution (see
// compat/resolution.sh). The @ts-expect-error lines fail the compile when an import resolves to
// nothing typed (an `any` accepts anything, and an unused @ts-expect-error is an error).
import { TransactionalModule, TransactionHost, type TransactionalStats } from 'nestjs-request-transaction';
import { ConnectionAudit, rollbackPerTest, singleConnectionPool } from 'nestjs-request-transaction/testing';
import { registerTransactionMetrics, type TransactionMetricsOptions } from 'nestjs-request-transaction/prometheus';

export const module = TransactionalModule.forRoot({ guard: 'throw' });
export const pool = singleConnectionPool({ type: 'postgres', url: 'postgres://localhost/app' });
export const testTransaction = rollbackPerTest(() => undefined as never);
export const metrics: TransactionMetricsOptions = {};
export function report(host: TransactionHost): TransactionalStats {
  registerTransactionMetrics(host, metrics);
  return host.stats();
}
export type Audit = ConnectionAudit;

// @ts-expect-error: guard is 'throw', 'warn' or 'off'
TransactionalModule.forRoot({ guard: 'loudly' });
// @ts-expect-error: singleConnectionPool() takes TypeORM options
singleConnectionPool(42);
// @ts-expect-error: registerTransactionMetrics() takes the TransactionHost
registerTransactionMetrics('host');
