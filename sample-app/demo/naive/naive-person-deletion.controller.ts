import { Controller, Delete, HttpCode, HttpStatus, Param, ParseIntPipe } from '@nestjs/common';
import { NoTransaction } from 'nestjs-request-transaction';
import { NaivePeopleService } from './naive-people.service';

/** The naive variant's `DELETE /people/:id`: outside TransactionalModule (no request transaction, no guard). */
@Controller('people')
@NoTransaction()
export class NaivePersonDeletionController {
  constructor(private readonly people: NaivePeopleService) {}

  @Delete(':id')
  @HttpCode(HttpStatus.NO_CONTENT)
  remove(@Param('id', ParseIntPipe) id: number): Promise<void> {
    return this.people.remove(id);
  }
}
