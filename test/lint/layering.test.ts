/**
 * The import direction of ARCHITECTURE.md is enforced by eslint.config.js; these
 * cases prove that a wrong import fails lint and a right one passes.
 */
import { ESLint } from 'eslint';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../helpers/engine.js';

const eslint = new ESLint({ cwd: REPO_ROOT });

async function layeringErrors(file: string, code: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath: path.join(REPO_ROOT, file) });
  return result!.messages
    .filter((m) => m.ruleId === '@typescript-eslint/no-restricted-imports')
    .map((m) => m.message);
}

const cases: [file: string, code: string, expected: RegExp | null][] = [
  [
    'engine/src/service/x.ts',
    "import { app } from 'electron';\nexport const a = app;\n",
    /never imports Electron/,
  ],
  [
    'engine/src/control/x.ts',
    "import { x } from '../../../electron/src/main.js';\nexport const a = x;\n",
    /never imports Electron/,
  ],
  [
    'engine/src/service/x.ts',
    "import { x } from '../../../renderer/src/main.js';\nexport const a = x;\n",
    /never imports the renderer/,
  ],
  [
    'engine/src/core/x.ts',
    "import { TcpTransport } from '../transport/tcp/listener.js';\nexport const a = TcpTransport;\n",
    /layer sits below/,
  ],
  [
    'engine/src/core/x.ts',
    "import { MemoryBackend } from '../storage/memory.js';\nexport const a = MemoryBackend;\n",
    /never a concrete backend/,
  ],
  [
    'engine/src/protocol/x.ts',
    "import { Engine } from '../service/engine.js';\nexport const a = Engine;\n",
    /layer sits below/,
  ],
  [
    'engine/src/storage/x.ts',
    "import { openDatabase } from '../persistence/db.js';\nexport const a = openDatabase;\n",
    /layer sits below/,
  ],
  [
    'engine/src/metrics/x.ts',
    "import { Engine } from '../service/engine.js';\nexport const a = Engine;\n",
    /layer sits below/,
  ],
  [
    'engine/src/events/x.ts',
    "import { TcpTransport } from '../transport/tcp/listener.js';\nexport const a = TcpTransport;\n",
    /layer sits below/,
  ],
  ['renderer/src/x.ts', "import fs from 'node:fs';\nexport const a = fs;\n", /has no Node/],
  [
    'renderer/src/x.ts',
    "import { Engine } from '../../engine/src/service/engine.js';\nexport const a = Engine;\n",
    /only types from the engine/,
  ],
  [
    'electron/src/x.ts',
    "import { Engine } from '../../engine/src/service/engine.js';\nexport const a = Engine;\n",
    /client of the engine/,
  ],
  // allowed directions
  [
    'engine/src/core/x.ts',
    "import type { BlockBackend } from '../storage/backend.js';\nexport type A = BlockBackend;\n",
    null,
  ],
  [
    'engine/src/service/x.ts',
    "import { MemoryBackend } from '../storage/memory.js';\nexport const a = MemoryBackend;\n",
    null,
  ],
  [
    'renderer/src/x.ts',
    "import type { SystemStatus } from '../../contract/api.js';\nexport type A = SystemStatus;\n",
    null,
  ],
  [
    'renderer/src/x.ts',
    "import type { Engine } from '../../engine/src/service/engine.js';\nexport type A = Engine;\n",
    null,
  ],
];

describe('layering lint rule', () => {
  it.each(cases)('%s: %s', async (file, code, expected) => {
    const errors = await layeringErrors(file, code);
    if (expected) {
      expect(errors.length).toBeGreaterThan(0);
      expect(errors.join('\n')).toMatch(expected);
    } else {
      expect(errors).toEqual([]);
    }
  });
});
