/** Alert-rule inputs for one made-up volume, shared by the rule tests. */
import type { AlertInputs, VolumeIo } from '../../../engine/src/events/rules.js';

export const VOLUME_SUBNQN = 'nqn.2026-01.com.example:vol1';

/** One volume (vol1, namespace 1) with zeroed counters, overridden by `v`. */
export const vol = (v: Partial<VolumeIo>): AlertInputs => ({
  volumes: [
    {
      subject: `${VOLUME_SUBNQN}/1`,
      label: 'volume vol1 (namespace 1)',
      path: '/srv/vol1.img',
      errors: 0,
      readOps: 0,
      readLatencyUs: 0,
      writeOps: 0,
      writeLatencyUs: 0,
      ...v,
    },
  ],
});
