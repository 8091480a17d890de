import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { documentationBlocks, extractBlocks } from '../../scripts/docs-blocks';

const ROOT = join(__dirname, '..', '..');

describe('the documentation', () => {
  it("shows the README's example files byte for byte (test/examples/, which the e2e suite runs)", () => {
    const example = documentationBlocks(ROOT).filter((block) => block.document === 'README.md' && block.file);

    expect(example.map((block) => block.file)).toEqual([
      'test/examples/app.module.ts',
      'test/examples/account.entity.ts',
      'test/examples/accounts.service.ts',
      'test/examples/accounts.controller.ts',
    ]);
    for (const block of example) {
      expect({ file: block.file, code: block.code }).toEqual({
        file: block.file,
        code: readFileSync(join(ROOT, block.file!), 'utf8'),
      });
    }
  });
});

describe('extractBlocks', () => {
  it('reads ts blocks with their line, file mark and fragment flag, and skips other languages', () => {
    const markdown = [
      '# Title', // 1
      '```sh', // 2
      'npm i x', // 3
      '```', // 4
      '<!-- file: test/examples/a.ts -->', // 5
      '```ts', // 6
      "import { A } from './a';", // 7
      '```', // 8
      '- a list item:', // 9
      '', // 10
      '  ```ts fragment', // 11
      '  run(): void', // 12
      '  ```', // 13
      '````typescript', // 14
      '```', // 15
      '````', // 16
    ].join('\n');

    expect(extractBlocks(markdown, 'doc.md')).toEqual([
      { document: 'doc.md', line: 7, code: "import { A } from './a';\n", fragment: false, file: 'test/examples/a.ts' },
      { document: 'doc.md', line: 12, code: 'run(): void\n', fragment: true, file: undefined },
      { document: 'doc.md', line: 15, code: '```\n', fragment: false, file: undefined },
    ]);
  });
});
