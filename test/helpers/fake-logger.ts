/** A fake logger(1) for syslog delivery tests: appends what it reads to a file. */
import fs from 'node:fs';
import path from 'node:path';

export function fakeLogger(d: string): { command: string; file: string } {
  const file = path.join(d, 'syslog.txt');
  const command = path.join(d, 'fake-logger');
  fs.writeFileSync(command, `#!/bin/sh\nexec cat >> '${file}'\n`, { mode: 0o755 });
  return { command, file };
}
