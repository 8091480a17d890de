import 'reflect-metadata';
import { Column, Entity, PrimaryColumn } from 'typeorm';
import { lockInOrder, TransactionalError } from '../../lib';

@Entity('bad_input_unit_items')
class Item {
  @PrimaryColumn({ type: 'int' })
  id!: number;

  @Column({ type: 'int' })
  value!: number;
}

describe('lockInOrder() given something other than an EntityManager', () => {
  it.each([undefined, null, {}])('rejects %p before anything else', async (tx) => {
    const attempt = lockInOrder(tx as never, Item, [1]);
    await expect(attempt).rejects.toThrow(TransactionalError);
    await expect(attempt).rejects.toThrow(/^lockInOrder\(\) takes an EntityManager first, got (undefined|null|an object)\. Pass the manager from @Tx\(\)/);
  });
});
