import { Controller, Get } from '@nestjs/common';
import { adapters, createApp, type TestApp } from '../support/app';
import { latch } from '../support/latch';

let handlerEntered = latch();
let releaseHandler = latch();

@Controller()
class ProbeController {
  @Get('ping')
  ping(): { pong: true } {
    return { pong: true };
  }

  @Get('hang')
  async hang(): Promise<string> {
    handlerEntered.resolve();
    await releaseHandler.promise;
    return 'released';
  }
}

describe.each(adapters)('createApp on %s', (adapter) => {
  let testApp: TestApp;

  beforeEach(async () => {
    handlerEntered = latch();
    releaseHandler = latch();
    testApp = await createApp({ adapter, controllers: [ProbeController] });
  });

  afterEach(async () => {
    releaseHandler.resolve();
    await testApp.close();
  });

  it('serves HTTP on a real 127.0.0.1 port', async () => {
    expect(testApp.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);

    const response = await fetch(`${testApp.url}/ping`);

    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ pong: true });
  });

  it('closes while a request is still in flight, cutting its connection', async () => {
    const request = fetch(`${testApp.url}/hang`).then(
      () => 'answered',
      () => 'connection cut',
    );
    await handlerEntered.promise;

    await testApp.close();

    expect(await request).toBe('connection cut');
    await expect(fetch(`${testApp.url}/ping`)).rejects.toThrow();
  });
});
