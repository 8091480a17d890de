import { Column, Entity, EntityManager, PrimaryGeneratedColumn, QueryFailedError } from 'typeorm';

@Entity()
export class Subscriber {
  @PrimaryGeneratedColumn() id!: number;
  @Column({ unique: true }) email!: string;
}

export async function subscribeOnce(tx: EntityManager, email: string): Promise<void> {
  // The savepoint's failure is rolled back alone; the request's transaction goes on.
  await tx
    .transaction((savepoint) => savepoint.insert(Subscriber, { email }))
    .catch((error: unknown) => {
      if (!(error instanceof QueryFailedError)) throw error; // only the duplicate is expected here
    });
}
