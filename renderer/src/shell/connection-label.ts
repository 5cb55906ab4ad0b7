import type { ConnectionState } from '../../../contract/api.js';
import type { LinkProblem } from '../api/client.js';

export type Tone = 'ok' | 'warn' | 'bad';

/** The short words and colour the UI uses for the link, wherever it shows it. */
export function describeLink(
  state: ConnectionState,
  problem: LinkProblem,
): { label: string; tone: Tone } {
  if (problem === 'signed-out') return { label: 'Signed out', tone: 'warn' };
  if (problem === 'setup-required') return { label: 'Setup needed', tone: 'warn' };
  if (problem === 'refused') return { label: 'Refused', tone: 'bad' };
  switch (state) {
    case 'connected':
      return { label: 'Connected', tone: 'ok' };
    case 'connecting':
      return { label: 'Connecting…', tone: 'warn' };
    case 'disconnected':
      return { label: 'Disconnected', tone: 'bad' };
  }
}
