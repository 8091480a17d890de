import type { DataSource, QueryRunner } from 'typeorm';

/**
 * The per-request transaction the naive variant writes by hand (seed 002's "ContextManager"): a
 * QueryRunner of its own, committed or rolled back and released here. Correct on its own; what goes
 * wrong is the code inside that forgets to use `queryRunner.manager`.
 */
export async function inManualTransaction<T>(dataSource: DataSource, work: (queryRunner: QueryRunner) => Promise<T>): Promise<T> {
  const queryRunner = dataSource.createQueryRunner();
  await queryRunner.connect();
  try {
    await queryRunner.startTransaction();
    const result = await work(queryRunner);
    await queryRunner.commitTransaction();
    return result;
  } catch (error) {
    if (queryRunner.isTransactionActive) await queryRunner.rollbackTransaction().catch(() => undefined);
    throw error;
  } finally {
    await queryRunner.release();
  }
}
