/** `branchsan service install`: the plan it runs, and the unit it writes for this installation. */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { UNIT_DEST, planAction, planInstall, unitFor } from '../../../engine/src/cli/service.js';
import { REPO_ROOT } from '../../helpers/engine.js';

const unit = fs.readFileSync(path.join(REPO_ROOT, 'build', 'linux', 'branchsan.service'), 'utf8');

describe('service install plan', () => {
  it('points ExecStart at this node and this copy, keeping the rest of the unit', () => {
    const out = unitFor(unit, '/usr/local/bin/node', '/srv/branchsan/bin/branchsan.js');
    expect(out).toMatch(
      /^ExecStart=\/usr\/local\/bin\/node \/srv\/branchsan\/bin\/branchsan\.js serve --data \/var\/lib\/branchsan --socket \/run\/branchsan\/engine\.sock$/m,
    );
    expect(out.replace(/^ExecStart=.*$/m, '')).toBe(unit.replace(/^ExecStart=.*$/m, ''));
    expect(unitFor(unit, '/usr/bin/node', '/opt/BranchSAN/resources/engine/bin/branchsan.js')).toBe(
      unit,
    );
  });

  it('creates the admin group only when missing, then installs, reloads, enables', () => {
    const args = { unitText: unit, nodePath: '/n', binPath: '/b' };
    const fresh = planInstall({ ...args, groupExists: false });
    expect(fresh.map((s) => ('run' in s ? s.run.join(' ') : `write ${s.write}`))).toEqual([
      'groupadd --system branchsan-admin',
      `write ${UNIT_DEST}`,
      'systemctl daemon-reload',
      'systemctl enable --now branchsan.service',
    ]);
    expect(planInstall({ ...args, groupExists: true })).toHaveLength(3);
    expect(planAction('status')[0]).toMatchObject({
      run: ['systemctl', 'status', 'branchsan.service', '--no-pager'],
    });
  });
});
