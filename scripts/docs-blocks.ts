/**
 * The TypeScript blocks of the documentation, as `npm run docs:check` and test/unit/docs.spec.ts read
 * them. The conventions (also in CONTRIBUTING.md):
 *
 * - ```` ```ts ```` (or `typescript`): a complete module, imports included, that compiles against the
 *   package (`nestjs-request-transaction` and its subpaths map to lib/). Each block is its own file.
 * - `<!-- file: test/examples/app.module.ts -->` on the line before a block: the block is that file of the
 *   repository, byte for byte. The file is compiled with the project and run by the test suite; the
 *   blocks of one document marked so can import each other by their file names (`./account.entity`), and
 *   the blocks of every document can import the README example's files so (`./app.module`).
 * - ```` ```ts fragment ````: not compiled (a signature, a piece of a class). Keep them few.
 *
 * Blocks in other languages (`sh`, `text`, none) are not checked.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';

/** One fenced TypeScript block of a Markdown file. */
export interface DocBlock {
  /** The Markdown file, relative to the repository root. */
  document: string;
  /** 1-based line of the block's first code line in the document. */
  line: number;
  /** The code, with a final newline. */
  code: string;
  /** `fragment`: not compiled. */
  fragment: boolean;
  /** The repository file the block is (`<!-- file: … -->`), relative to the root. */
  file?: string;
}

const FENCE = /^(\s*)(`{3,}|~{3,})\s*([^`]*)$/;
const FILE_MARK = /^<!--\s*file:\s*(\S+)\s*-->\s*$/;

/** The TypeScript blocks of one Markdown text. */
export function extractBlocks(markdown: string, document: string): DocBlock[] {
  const lines = markdown.split('\n');
  const blocks: DocBlock[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = FENCE.exec(lines[i]);
    if (!open) continue;
    const [, indent, fence, info] = open;
    const closes = (text: string): boolean => {
      const trimmed = text.trim();
      return trimmed.length >= fence.length && trimmed === fence[0].repeat(trimmed.length);
    };
    const end = lines.findIndex((text, j) => j > i && closes(text));
    const close = end === -1 ? lines.length : end;
    const [language, ...flags] = info.trim().split(/\s+/);
    if (language === 'ts' || language === 'typescript') {
      const body = lines
        .slice(i + 1, close)
        .map((text) => (text.startsWith(indent) ? text.slice(indent.length) : text.trimStart()));
      const mark = i > 0 ? FILE_MARK.exec(lines[i - 1].trim()) : null;
      blocks.push({
        document,
        line: i + 2,
        code: `${body.join('\n')}\n`,
        fragment: flags.includes('fragment'),
        file: mark?.[1],
      });
    }
    i = close;
  }
  return blocks;
}

/** README.md, CONTRIBUTING.md and docs/*.md of the repository at `root`, relative to it. */
export function documentationFiles(root: string): string[] {
  const docs = readdirSync(join(root, 'docs'))
    .filter((name) => name.endsWith('.md'))
    .sort()
    .map((name) => relative(root, join(root, 'docs', name)));
  return ['README.md', 'CONTRIBUTING.md', ...docs].filter((path) => {
    try {
      readFileSync(join(root, path));
      return true;
    } catch {
      return false;
    }
  });
}

/** Every TypeScript block of the documentation of the repository at `root`. */
export function documentationBlocks(root: string): DocBlock[] {
  return documentationFiles(root).flatMap((path) => extractBlocks(readFileSync(join(root, path), 'utf8'), path));
}
