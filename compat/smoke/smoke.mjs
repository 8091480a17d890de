// The smoke app as an ESM application loads it (NestJS 12's packages are ESM-only): see checks.cjs.
import 'reflect-metadata';
import * as common from '@nestjs/common';
import * as core from '@nestjs/core';
import * as microservices from '@nestjs/microservices';
import * as platformFastify from '@nestjs/platform-fastify';
import * as nestTypeorm from '@nestjs/typeorm';
import * as typeorm from 'typeorm';
import * as lib from 'nestjs-request-transaction';
import * as testing from 'nestjs-request-transaction/testing';
import pg from 'pg';
import * as rxjs from 'rxjs';
import checks from './checks.cjs';

try {
  const ok = await checks.runSmoke({
    moduleSystem: 'ESM',
    common,
    core,
    microservices,
    platformFastify,
    nestTypeorm,
    typeorm,
    lib,
    testing,
    pg,
    rxjs,
  });
  process.exit(ok ? 0 : 1);
} catch (error) {
  console.error(error);
  process.exit(1);
}
