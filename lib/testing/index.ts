export type { IdleGap } from '../core/idle-gap-report';
export { ConnectionAudit, type PlainAcquisition, type UnitAudit } from './connection-audit';
export { rollbackPerTest, TestTransaction } from './rollback-per-test';
export { singleConnectionPool, type SingleConnectionPoolInput } from './single-connection-pool';
