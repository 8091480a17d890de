import { Body, Controller, Get, Param, ParseIntPipe, Post } from '@nestjs/common';
import { Transactional } from 'nestjs-request-transaction';
import { PeopleService } from './people.service';
import { AddPersonDto } from './person.dto';
import type { Person } from './person.entity';

@Controller('people')
export class PeopleController {
  constructor(private readonly people: PeopleService) {}

  @Post()
  add(@Body() dto: AddPersonDto): Promise<Person> {
    return this.people.add(dto.name);
  }

  @Get(':id')
  @Transactional({ readOnly: true })
  get(@Param('id', ParseIntPipe) id: number): Promise<Person> {
    return this.people.get(id);
  }
}
