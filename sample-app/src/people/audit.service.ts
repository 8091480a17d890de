import { Injectable } from '@nestjs/common';
import { InjectTxRepository } from 'nestjs-request-transaction';
import type { Repository } from 'typeorm';
import { AuditEntry } from './audit-entry.entity';

/** The audit log, written in the transaction of the change it records. */
@Injectable()
export class AuditService {
  constructor(@InjectTxRepository(AuditEntry) private readonly entries: Repository<AuditEntry>) {}

  async record(action: string, subjectId: number): Promise<void> {
    await this.entries.insert({ action, subjectId });
  }
}
