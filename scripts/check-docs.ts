/**
 * `npm run docs:check`: type-checks every TypeScript block of README.md, CONTRIBUTING.md and docs/*.md
 * against the package, so the documentation cannot drift from the API. Conventions: scripts/docs-blocks.ts.
 *
 * Each block is written to .docs-check/ as a file of its own (a block that declares nothing is made a
 * module, so blocks never share a scope), and tsc checks them all with the project's compiler options,
 * `nestjs-request-transaction` mapped to lib/ as in jest.config.ts. Errors are reported at the
 * document's line (.docs-check/ is then left in place, to look at). A block marked `<!-- file: … -->`
 * must equal that repository file byte for byte. The README's example is such blocks; every document's
 * blocks may import its files by name (`./app.module`).
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import * as ts from 'typescript';
import { type DocBlock, documentationBlocks } from './docs-blocks';

const ROOT = resolve(__dirname, '..');
const OUT = join(ROOT, '.docs-check');

interface Written {
  block: DocBlock;
}

function main(): void {
  const blocks = documentationBlocks(ROOT);
  const problems: string[] = [];

  for (const block of blocks.filter((b) => b.file !== undefined)) {
    let actual: string | undefined;
    try {
      actual = readFileSync(join(ROOT, block.file!), 'utf8');
    } catch {
      problems.push(`${block.document}:${block.line}: the block is marked as ${block.file}, which does not exist.`);
      continue;
    }
    if (actual !== block.code) {
      problems.push(
        `${block.document}:${block.line}: the block differs from ${block.file}, which the tests compile and run. ` +
          `Change both: the block must be the file, byte for byte.`,
      );
    }
  }

  rmSync(OUT, { recursive: true, force: true });
  const written = new Map<string, Written>();
  // Every document's blocks may import the README example's files by name (`./app.module`).
  const example = blocks.filter((b) => b.document === 'README.md' && b.file !== undefined);
  const copies = new Set<string>(); // reported where the README shows them, not once per copy
  for (const block of blocks.filter((b) => !b.fragment)) {
    const folder = join(OUT, block.document.replace(/[/.]/g, '_'));
    if (!existsSync(folder)) {
      mkdirSync(folder, { recursive: true });
      if (block.document !== 'README.md') {
        for (const file of example) {
          const copy = join(folder, basename(file.file!));
          writeFileSync(copy, file.code);
          copies.add(copy);
        }
      }
    }
    const path = join(folder, block.file ? basename(block.file) : `line-${block.line}.ts`);
    const isModule = /^\s*(import|export)\s/m.test(block.code);
    writeFileSync(path, isModule ? block.code : `${block.code}export {};\n`);
    written.set(path, { block });
  }
  writeFileSync(
    join(OUT, 'tsconfig.json'),
    JSON.stringify({
      extends: '../tsconfig.json',
      compilerOptions: { noEmit: true, types: ['node', 'jest'] },
      include: ['**/*.ts'],
    }),
  );

  const config = ts.getParsedCommandLineOfConfigFile(
    join(OUT, 'tsconfig.json'),
    {},
    {
      ...ts.sys,
      onUnRecoverableConfigFileDiagnostic: (diagnostic) =>
        problems.push(ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n')),
    },
  );
  if (config) {
    const program = ts.createProgram({ rootNames: config.fileNames, options: config.options });
    for (const diagnostic of ts.getPreEmitDiagnostics(program)) {
      const message = ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n');
      const source = diagnostic.file;
      const origin = source ? written.get(resolve(source.fileName)) : undefined;
      if (source && copies.has(resolve(source.fileName))) continue;
      if (!source || diagnostic.start === undefined) {
        problems.push(`TS${diagnostic.code}: ${message}`);
      } else if (!origin) {
        problems.push(`${source.fileName}: TS${diagnostic.code}: ${message}`);
      } else {
        const { line, character } = source.getLineAndCharacterOfPosition(diagnostic.start);
        const at = `${origin.block.document}:${origin.block.line + line}:${character + 1}`;
        problems.push(`${at}: TS${diagnostic.code}: ${message}`);
      }
    }
  }

  const fragments = blocks.filter((b) => b.fragment);
  console.log(
    `docs:check: ${blocks.length} TypeScript blocks in ${new Set(blocks.map((b) => b.document)).size} documents; ` +
      `${blocks.length - fragments.length} compiled, ${blocks.filter((b) => b.file).length} of them repository files, ` +
      `${fragments.length} fragments not compiled` +
      (fragments.length ? ` (${fragments.map((b) => `${b.document}:${b.line}`).join(', ')})` : ''),
  );
  if (problems.length) {
    console.error(`\n${problems.join('\n')}\n\n${problems.length} problem(s) in the documentation's code (the files: ${OUT}).`);
    process.exitCode = 1;
  } else {
    rmSync(OUT, { recursive: true, force: true });
  }
}

main();
