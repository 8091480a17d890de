import { Check, Column, Entity, PrimaryGeneratedColumn } from 'typeorm';

/** A wallet account. Balances are whole cents: integers add up exactly. */
@Entity('wallet_accounts')
@Check('balance >= 0')
export class Account {
  @PrimaryGeneratedColumn()
  id!: number;

  @Column({ type: 'varchar', length: 100 })
  owner!: string;

  @Column({ type: 'int' })
  balance!: number;
}
