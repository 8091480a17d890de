import { Controller, Delete, HttpCode, HttpStatus, Param, ParseIntPipe } from '@nestjs/common';
import { PeopleService } from './people.service';

/** `DELETE /people/:id` on its own, so that the naive variant can serve it its way. */
@Controller('people')
export class PersonDeletionController {
  constructor(private readonly people: PeopleService) {}

  @Delete(':id')
  @HttpCode(HttpStatus.NO_CONTENT)
  remove(@Param('id', ParseIntPipe) id: number): Promise<void> {
    return this.people.remove(id);
  }
}
