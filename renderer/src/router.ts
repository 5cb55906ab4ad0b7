/**
 * Pages and the nav. Hash history: it works both when Electron loads the bundle from
 * app://branchsan/ and when the engine serves it over http(s) as the web console.
 * A page appears in the header's nav when its route declares `meta.nav`.
 */
import { createRouter, createWebHashHistory, type RouteRecordRaw, type Router } from 'vue-router';
import StatusPage from './pages/status/StatusPage.vue';

declare module 'vue-router' {
  interface RouteMeta {
    /** Shown in the window title. */
    title?: string;
    /** Present on pages that belong in the header's nav; lower `order` comes first. */
    nav?: { label: string; order: number };
  }
}

export const routes: RouteRecordRaw[] = [
  { path: '/', redirect: '/status' },
  {
    path: '/status',
    name: 'status',
    component: StatusPage,
    meta: { title: 'Status', nav: { label: 'Status', order: 10 } },
  },
  { path: '/:unknown(.*)*', redirect: '/status' },
];

/**
 * A function, not a module-level router: the hash history captures location.search when
 * created, so it must be created after createApiClient() took the token out of the URL.
 */
export function createAppRouter(): Router {
  const router = createRouter({ history: createWebHashHistory(), routes });
  router.afterEach((to) => {
    document.title = to.meta.title ? `${to.meta.title} · BranchSAN` : 'BranchSAN';
  });
  return router;
}
