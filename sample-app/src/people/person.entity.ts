import { Column, Entity, PrimaryGeneratedColumn } from 'typeorm';

/** A customer. */
@Entity('wallet_people')
export class Person {
  @PrimaryGeneratedColumn()
  id!: number;

  @Column({ type: 'varchar', length: 100 })
  name!: string;
}
