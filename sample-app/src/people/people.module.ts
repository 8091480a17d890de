import { type DynamicModule, Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { TransactionalModule } from 'nestjs-request-transaction';
import type { Variant } from '../common/variant';
import { AuditEntry } from './audit-entry.entity';
import { AuditService } from './audit.service';
import { NaivePeopleService } from './naive-people.service';
import { NaivePersonDeletionController } from './naive-person-deletion.controller';
import { NotificationsService } from './notifications.service';
import { PeopleController } from './people.controller';
import { PeopleService } from './people.service';
import { PersonDeletionController } from './person-deletion.controller';
import { Person } from './person.entity';

@Module({
  imports: [TransactionalModule.forFeature([Person, AuditEntry]), TypeOrmModule.forFeature([AuditEntry])],
  controllers: [PeopleController],
  providers: [PeopleService, AuditService, NotificationsService, NaivePeopleService],
})
export class PeopleModule {
  /** Adds `DELETE /people/:id`, served by the variant's controller. */
  static forVariant(variant: Variant): DynamicModule {
    return { module: PeopleModule, controllers: [variant === 'naive' ? NaivePersonDeletionController : PersonDeletionController] };
  }
}
