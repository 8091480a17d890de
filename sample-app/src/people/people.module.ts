import { Module } from '@nestjs/common';
import { TransactionalModule } from 'nestjs-request-transaction';
import { AuditEntry } from './audit-entry.entity';
import { AuditService } from './audit.service';
import { NotificationsService } from './notifications.service';
import { PeopleController } from './people.controller';
import { PeopleService } from './people.service';
import { PersonDeletionController } from './person-deletion.controller';
import { Person } from './person.entity';

@Module({
  imports: [TransactionalModule.forFeature([Person, AuditEntry])],
  controllers: [PeopleController, PersonDeletionController],
  providers: [PeopleService, AuditService, NotificationsService],
})
export class PeopleModule {}
