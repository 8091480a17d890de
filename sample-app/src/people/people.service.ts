import { Injectable, NotFoundException } from '@nestjs/common';
import { InjectTxRepository, TransactionHost } from 'nestjs-request-transaction';
import type { Repository } from 'typeorm';
import { AuditService } from './audit.service';
import { NotificationsService } from './notifications.service';
import { Person } from './person.entity';

/**
 * People, with the implicit style: repositories bound to the request transaction, so the follow-up
 * work of a deletion (the audit entry) commits or rolls back with it, on the same connection.
 */
@Injectable()
export class PeopleService {
  constructor(
    @InjectTxRepository(Person) private readonly people: Repository<Person>,
    private readonly audit: AuditService,
    private readonly notifications: NotificationsService,
    private readonly transaction: TransactionHost,
  ) {}

  add(name: string): Promise<Person> {
    return this.people.save(this.people.create({ name }));
  }

  async get(id: number): Promise<Person> {
    const person = await this.people.findOneBy({ id });
    if (person === null) throw new NotFoundException(`Person ${id} does not exist.`);
    return person;
  }

  async remove(id: number): Promise<void> {
    const { affected } = await this.people.delete({ id });
    if (!affected) throw new NotFoundException(`Person ${id} does not exist.`);
    await this.audit.record('person.deleted', id);
    // Not database work: only once the deletion is committed (never for a rolled-back one).
    this.transaction.afterCommit(() => this.notifications.send(`person ${id} deleted`));
  }
}
