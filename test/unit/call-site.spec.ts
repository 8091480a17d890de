import { callSite, captureStack } from '../../lib/core/call-site';

describe('callSite', () => {
  function capturedHere() {
    return captureStack();
  }

  it('names the first frame outside the library and node_modules', () => {
    const site = callSite(capturedHere());
    expect(site).toMatch(/capturedHere \(.*call-site\.spec\.ts:\d+:\d+\)/);
  });

  it('returns the same answer when asked twice', () => {
    const holder = capturedHere();
    expect(callSite(holder)).toBe(callSite(holder));
  });

  it('is undefined without a holder', () => {
    expect(callSite(undefined)).toBeUndefined();
  });
});
