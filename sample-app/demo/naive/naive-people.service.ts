import { Injectable, NotFoundException } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { DataSource, type Repository } from 'typeorm';
import { inManualTransaction } from './manual-transaction';
import { AuditEntry } from '../../src/people/audit-entry.entity';
import { NotificationsService } from '../../src/people/notifications.service';
import { Person } from '../../src/people/person.entity';

/**
 * Deletion as seed 002 wrote it: the request's own QueryRunner transaction deletes the person, and the
 * follow-up goes through a plain injected repository, on a second pooled connection, outside that
 * transaction. Ten requests hold ten connections and each waits for an eleventh: self-DoS.
 */
@Injectable()
export class NaivePeopleService {
  constructor(
    private readonly dataSource: DataSource,
    @InjectRepository(AuditEntry) private readonly auditLog: Repository<AuditEntry>,
    private readonly notifications: NotificationsService,
  ) {}

  async remove(id: number): Promise<void> {
    await inManualTransaction(this.dataSource, async ({ manager }) => {
      const { affected } = await manager.delete(Person, { id });
      if (!affected) throw new NotFoundException(`Person ${id} does not exist.`);
      await this.auditLog.insert({ action: 'person.deleted', subjectId: id }); // ← a second connection
    });
    await this.notifications.send(`person ${id} deleted`);
  }
}
