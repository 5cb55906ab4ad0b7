/** The tray icon: connection status, "Open console", "Quit". */
import { Menu, Tray, nativeImage, type NativeImage } from 'electron';
import type { LinkStatus } from './engine-link.js';

const LABEL: Record<LinkStatus['state'], string> = {
  connected: 'Engine: connected',
  connecting: 'Engine: connecting…',
  disconnected: 'Engine: disconnected',
};

/** Green, amber, red dots: drawn here so the app ships no icon files for the tray. */
const COLOUR: Record<LinkStatus['state'], [number, number, number]> = {
  connected: [46, 160, 67],
  connecting: [212, 160, 23],
  disconnected: [207, 34, 46],
};

export interface AppTray {
  update(status: LinkStatus): void;
  destroy(): void;
}

export function createTray(actions: { openConsole: () => void; quit: () => void }): AppTray {
  const icons = new Map<LinkStatus['state'], NativeImage>();
  const icon = (state: LinkStatus['state']): NativeImage => {
    let img = icons.get(state);
    if (!img) icons.set(state, (img = dot(COLOUR[state])));
    return img;
  };
  const tray = new Tray(icon('connecting'));
  const render = (status: LinkStatus): void => {
    tray.setImage(icon(status.state));
    tray.setToolTip(`BranchSAN — ${LABEL[status.state].toLowerCase()}`);
    const detail = status.state === 'connected' ? undefined : status.error?.message;
    tray.setContextMenu(
      Menu.buildFromTemplate([
        { label: LABEL[status.state], enabled: false },
        ...(detail ? [{ label: truncate(detail, 80), enabled: false }] : []),
        { type: 'separator' },
        { label: 'Open console', click: actions.openConsole },
        { label: 'Quit', click: actions.quit },
      ]),
    );
  };
  tray.on('click', actions.openConsole);
  render({ state: 'connecting', attempt: 0 });
  return { update: render, destroy: () => tray.destroy() };
}

/** A 16×16 anti-aliased dot as a BGRA bitmap. */
function dot([r, g, b]: [number, number, number]): NativeImage {
  const size = 16;
  const buf = Buffer.alloc(size * size * 4);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const d = Math.hypot(x + 0.5 - size / 2, y + 0.5 - size / 2);
      const alpha = Math.max(0, Math.min(1, size / 2 - 1 - d + 0.5));
      const i = (y * size + x) * 4;
      // premultiplied BGRA
      buf[i] = Math.round(b * alpha);
      buf[i + 1] = Math.round(g * alpha);
      buf[i + 2] = Math.round(r * alpha);
      buf[i + 3] = Math.round(255 * alpha);
    }
  }
  return nativeImage.createFromBitmap(buf, { width: size, height: size });
}

function truncate(s: string, n: number): string {
  return s.length <= n ? s : `${s.slice(0, n - 1)}…`;
}
