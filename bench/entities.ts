import { Column, Entity, PrimaryColumn, PrimaryGeneratedColumn } from 'typeorm';

/** Table names carry the `bench_` prefix: the bench never touches the tests' tables. */
@Entity({ name: 'bench_accounts' })
export class Account {
  @PrimaryColumn({ type: 'int' })
  id!: number;

  @Column({ type: 'bigint' })
  balance!: string;
}

@Entity({ name: 'bench_transfers' })
export class Transfer {
  @PrimaryGeneratedColumn()
  id!: number;

  @Column({ type: 'int' })
  fromId!: number;

  @Column({ type: 'int' })
  toId!: number;

  @Column({ type: 'int' })
  amount!: number;
}

export const entities = [Account, Transfer];
