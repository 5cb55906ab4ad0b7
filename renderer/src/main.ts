import './styles/base.css';
import { createPinia } from 'pinia';
import { createApp } from 'vue';
import App from './App.vue';
import { createApiClient } from './api/index.js';
import { API_CLIENT } from './api/inject.js';
import { createAppRouter } from './router.js';

// The client first: it takes the access token out of the address bar before the router reads it.
const client = createApiClient();
const app = createApp(App);
app.provide(API_CLIENT, client);
app.use(createPinia());
app.use(createAppRouter());
app.mount('#app');
