// The smoke app as a CommonJS application loads it (NestJS 10 and 11): see checks.cjs.
'use strict';
require('reflect-metadata');
const { runSmoke } = require('./checks.cjs');

runSmoke({
  moduleSystem: 'CommonJS',
  common: require('@nestjs/common'),
  core: require('@nestjs/core'),
  microservices: require('@nestjs/microservices'),
  platformFastify: require('@nestjs/platform-fastify'),
  nestTypeorm: require('@nestjs/typeorm'),
  typeorm: require('typeorm'),
  lib: require('nestjs-request-transaction'),
  testing: require('nestjs-request-transaction/testing'),
  pg: require('pg'),
  rxjs: require('rxjs'),
}).then(
  (ok) => process.exit(ok ? 0 : 1),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
