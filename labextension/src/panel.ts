/**
 * The Experiments sidebar: the current notebook's store, newest first, with search, paging,
 * details, "Restore into kernel" and "Compare selected" (SPEC §10).
 *
 * Plain DOM inside a lumino Widget. While the panel is visible it polls the listing every
 * `pollInterval` ms with If-None-Match (the server answers 304 when nothing changed), and
 * also right after a cell of the current notebook finishes, so a run recorded by
 * `%%experiment` shows at once. Requests are serialized: one in flight, at most one queued.
 */

import { NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import {
  ApiError,
  ExperimentsClient,
  IExperimentRow,
  IListing,
  IListRequest
} from './api';
import { IChosen, insertComparison, restoreIntoKernel } from './actions';
import { renderRecord } from './details';
import { absoluteTime, h, relativeTime, valueText } from './format';
import { experimentsIcon } from './icon';

/** Rows fetched per page ("Show more" asks for this many more). */
export const PAGE_SIZE = 50;
/** The most rows the panel lists (the server's largest page); search to reach the rest. */
const MAX_ROWS = 1000;
/** Metrics shown on each row: the store's first few metric names. */
const ROW_METRICS = 3;
/** Typing pauses this long (ms) before the query is sent; Enter sends it at once. */
const DEBOUNCE = 150;

const EXAMPLE = `%load_ext nbexp

%%experiment my-first-run
lr = 0.1     # a param
acc = 0.91   # a metric`;

function message(error: unknown): string {
  if (error instanceof ApiError) {
    return error.message;
  }
  return error instanceof Error ? error.message : String(error);
}

export interface IPanelOptions {
  client?: ExperimentsClient;
  /** ms between polls while visible (default 2000). */
  pollInterval?: number;
}

export class ExperimentsPanel extends Widget {
  constructor(options: IPanelOptions = {}) {
    super();
    this.id = 'nbexp-experiments';
    this.addClass('nbexp-panel');
    this.title.icon = experimentsIcon;
    this.title.caption = 'Experiments';
    this.client = options.client ?? new ExperimentsClient();
    this.pollInterval = options.pollInterval ?? 2000;

    this.searchInput = h('input', {
      className: 'nbexp-panel-search jp-mod-styled',
      attrs: {
        type: 'search',
        spellcheck: 'false',
        placeholder: "filter: metrics.acc > 0.8 and name = 'rf'",
        'aria-label': 'Filter experiments'
      }
    });
    this.storeLine = h('div', { className: 'nbexp-panel-store' });
    this.messageLine = h('div', { className: 'nbexp-panel-message', attrs: { role: 'alert' } });
    this.countLine = h('span', { className: 'nbexp-panel-count' });
    this.compareButton = h('button', {
      className: 'nbexp-panel-compare jp-mod-styled jp-mod-accept',
      text: 'Compare selected'
    });
    this.clearButton = h('button', {
      className: 'nbexp-panel-clear jp-mod-styled',
      text: 'Clear',
      title: 'Uncheck every experiment'
    });
    this.list = h('ul', { className: 'nbexp-panel-list', attrs: { role: 'list' } });
    this.moreButton = h('button', { className: 'nbexp-panel-more jp-mod-styled' });
    this.empty = h('div', { className: 'nbexp-panel-empty' });
    this.details = h('div', { className: 'nbexp-panel-details' });

    const body = h(
      'div',
      { className: 'nbexp-panel-body' },
      this.list,
      this.moreButton,
      this.empty
    );
    this.node.append(
      h(
        'header',
        { className: 'nbexp-panel-header' },
        h('h2', { className: 'nbexp-panel-title', text: 'Experiments' }),
        this.storeLine
      ),
      this.searchInput,
      this.messageLine,
      h(
        'div',
        { className: 'nbexp-panel-toolbar' },
        this.countLine,
        this.clearButton,
        this.compareButton
      ),
      body,
      this.details
    );

    this.searchInput.addEventListener('input', () => this.onQueryTyped());
    this.searchInput.addEventListener('keydown', event => {
      if (event.key === 'Enter') {
        this.applyQuery();
      } else if (event.key === 'Escape') {
        this.searchInput.value = '';
        this.applyQuery();
      }
    });
    this.list.addEventListener('click', event => this.onListClick(event));
    this.list.addEventListener('keydown', event => {
      const row = (event.target as HTMLElement).closest<HTMLElement>('.nbexp-panel-row');
      if (row && event.key === 'Enter' && event.target === row) {
        void this.openDetails(row.dataset.id ?? '');
      }
    });
    this.moreButton.addEventListener('click', () => {
      this.limit = Math.min(this.limit + PAGE_SIZE, MAX_ROWS);
      void this.refresh();
    });
    this.compareButton.addEventListener('click', () => void this.compareSelected());
    this.clearButton.addEventListener('click', () => {
      this.selected.clear();
      for (const box of this.list.querySelectorAll<HTMLInputElement>('.nbexp-panel-check')) {
        box.checked = false;
      }
      this.renderSelection();
    });
    NotebookActions.executed.connect(this.onCellExecuted, this);
    this.render();
  }

  /** The notebook whose store is shown; null shows a hint to open one. */
  get notebook(): NotebookPanel | null {
    return this._notebook;
  }

  set notebook(panel: NotebookPanel | null) {
    if (panel === this._notebook) {
      return;
    }
    if (this._notebook) {
      this._notebook.context.pathChanged.disconnect(this.onPathChanged, this);
    }
    this._notebook = panel;
    if (panel) {
      panel.context.pathChanged.connect(this.onPathChanged, this);
    }
    this.onPathChanged();
  }

  /** Fetch the listing now (a 304 leaves the rows as they are). */
  async refresh(): Promise<void> {
    if (this.inFlight) {
      this.queued = true;
      return this.inFlight;
    }
    this.inFlight = this.fetchListing();
    try {
      await this.inFlight;
    } finally {
      this.inFlight = null;
    }
    if (this.queued) {
      this.queued = false;
      await this.refresh();
    }
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this.stopPolling();
    window.clearTimeout(this.debounceTimer);
    NotebookActions.executed.disconnect(this.onCellExecuted, this);
    super.dispose();
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.updateTimes();
    void this.refresh();
    this.schedulePoll();
  }

  protected onBeforeHide(msg: Message): void {
    this.stopPolling();
    super.onBeforeHide(msg);
  }

  protected onBeforeDetach(msg: Message): void {
    this.stopPolling();
    super.onBeforeDetach(msg);
  }

  private onPathChanged(): void {
    const path = this._notebook ? this._notebook.context.path : null;
    if (path === this.path) {
      return;
    }
    this.path = path;
    this.listing = null;
    this.error = '';
    this.limit = PAGE_SIZE;
    this.selected.clear();
    this.closeDetails();
    this.client.reset();
    this.render();
    if (this.isVisible) {
      void this.refresh();
    }
  }

  private onCellExecuted(_: unknown, args: { notebook: unknown }): void {
    if (this._notebook && args.notebook === this._notebook.content && this.isVisible) {
      void this.refresh();
    }
  }

  private schedulePoll(): void {
    this.stopPolling();
    this.pollTimer = window.setTimeout(() => {
      this.pollTimer = 0;
      if (!this.isVisible || this.isDisposed) {
        return;
      }
      if (document.visibilityState !== 'hidden') {
        this.updateTimes();
        void this.refresh();
      }
      this.schedulePoll();
    }, this.pollInterval);
  }

  private stopPolling(): void {
    if (this.pollTimer) {
      window.clearTimeout(this.pollTimer);
      this.pollTimer = 0;
    }
  }

  private onQueryTyped(): void {
    window.clearTimeout(this.debounceTimer);
    this.debounceTimer = window.setTimeout(() => this.applyQuery(), DEBOUNCE);
  }

  private applyQuery(): void {
    window.clearTimeout(this.debounceTimer);
    const query = this.searchInput.value.trim();
    if (query === this.query && !this.error) {
      return;
    }
    this.query = query;
    this.limit = PAGE_SIZE;
    void this.refresh();
  }

  private request(): IListRequest | null {
    if (this.path === null) {
      return null;
    }
    return { path: this.path, query: this.query, offset: 0, limit: this.limit };
  }

  private async fetchListing(): Promise<void> {
    const request = this.request();
    if (request === null) {
      return;
    }
    let listing: IListing | null;
    try {
      listing = await this.client.list(request);
    } catch (error) {
      if (this.sameRequest(request)) {
        this.error = message(error);
        // A bad query keeps the last good rows on screen; other failures clear them.
        if (!(error instanceof ApiError && error.status === 400)) {
          this.listing = null;
        }
        this.client.reset();
        this.render();
      }
      return;
    }
    if (!this.sameRequest(request)) {
      return; // the notebook, query or page changed meanwhile: a queued refresh follows
    }
    if (listing === null) {
      if (this.error) {
        this.error = '';
        this.renderMessage();
      }
      return;
    }
    this.error = '';
    this.listing = listing;
    this.render();
  }

  private sameRequest(request: IListRequest): boolean {
    const now = this.request();
    return (
      now !== null &&
      now.path === request.path &&
      now.query === request.query &&
      now.limit === request.limit
    );
  }

  /** The names of the metrics shown on rows: the store's first few. */
  private metricNames(listing: IListing): string[] {
    if (listing.metric_names && listing.metric_names.length > 0) {
      return listing.metric_names.slice(0, ROW_METRICS);
    }
    const names: string[] = [];
    for (const row of listing.experiments) {
      for (const name of Object.keys(row.metrics ?? {})) {
        if (!names.includes(name)) {
          names.push(name);
        }
      }
    }
    return names.slice(0, ROW_METRICS);
  }

  private render(): void {
    this.renderMessage();
    const listing = this.listing;
    this.storeLine.textContent = '';
    this.empty.replaceChildren();
    if (this.path === null) {
      this.list.replaceChildren();
      this.countLine.textContent = '';
      this.moreButton.hidden = true;
      this.empty.append(
        h('p', { text: 'Open a notebook to see the experiments recorded from it.' })
      );
      this.renderSelection();
      return;
    }
    if (listing === null) {
      this.list.replaceChildren();
      this.countLine.textContent = this.error ? '' : 'loading…';
      this.moreButton.hidden = true;
      this.renderSelection();
      return;
    }
    if (listing.store) {
      this.storeLine.textContent = listing.store;
      this.storeLine.title = `the store of ${this.path}`;
    }
    const names = this.metricNames(listing);
    const now = Date.now();
    this.list.replaceChildren(...listing.experiments.map(row => this.renderRow(row, names, now)));
    const shown = listing.experiments.length;
    const noun = listing.total === 1 ? 'experiment' : 'experiments';
    this.countLine.textContent = this.query
      ? `${listing.total.toLocaleString()} matching`
      : `${listing.total.toLocaleString()} ${noun}`;
    this.moreButton.hidden = shown >= listing.total;
    this.moreButton.disabled = this.limit >= MAX_ROWS;
    this.moreButton.textContent = this.moreButton.disabled
      ? `${shown.toLocaleString()} of ${listing.total.toLocaleString()} shown: search to narrow`
      : `Show ${Math.min(PAGE_SIZE, listing.total - shown)} more ` +
        `(${shown.toLocaleString()} of ${listing.total.toLocaleString()} shown)`;
    if (listing.total === 0) {
      if (this.query) {
        this.empty.append(h('p', { text: `No experiment matches ${this.query}.` }));
      } else {
        this.empty.append(
          h('p', { text: 'No experiments recorded from this notebook’s project yet.' }),
          h('p', { text: 'Load nbexp, then put %%experiment on a cell and run it:' }),
          h('pre', { className: 'nbexp-panel-example', text: EXAMPLE }),
          h('p', { text: 'Each run appears here as soon as it is recorded.' })
        );
      }
    }
    this.renderSelection();
  }

  private renderRow(row: IExperimentRow, metricNames: string[], now: number): HTMLElement {
    const check = h('input', {
      className: 'nbexp-panel-check',
      attrs: { type: 'checkbox', 'aria-label': `select ${row.name}` }
    });
    check.checked = this.selected.has(row.id);
    const metrics = h('div', { className: 'nbexp-panel-row-metrics' });
    for (const name of metricNames) {
      if (row.metrics && name in row.metrics) {
        metrics.append(
          h(
            'span',
            { className: 'nbexp-panel-metric', attrs: { 'data-metric': name } },
            h('span', { className: 'nbexp-panel-metric-name', text: name }),
            ' ',
            h('span', {
              className: 'nbexp-panel-metric-value',
              text: valueText(row.metrics[name], row.text?.metrics?.[name])
            })
          )
        );
      }
    }
    const status = row.status || 'ok';
    const item = h(
      'li',
      {
        className: 'nbexp-panel-row',
        attrs: { 'data-id': row.id, tabindex: '0', role: 'listitem' }
      },
      check,
      h(
        'div',
        { className: 'nbexp-panel-row-body' },
        h(
          'div',
          { className: 'nbexp-panel-row-top' },
          h('span', { className: 'nbexp-panel-name', text: row.name, title: row.name }),
          h('span', { className: `nbexp-panel-status nbexp-panel-status-${status}`, text: status })
        ),
        h(
          'div',
          { className: 'nbexp-panel-row-meta' },
          h('span', {
            className: 'nbexp-panel-time',
            text: relativeTime(row.created, now),
            title: absoluteTime(row.created),
            attrs: { 'data-created': row.created }
          }),
          ' · ',
          h('span', { className: 'nbexp-panel-id', text: row.short_id }),
          ...(row.tags ?? []).map(tag => h('span', { className: 'nbexp-panel-tag', text: tag }))
        ),
        metrics
      )
    );
    if (row.id === this.openId) {
      item.classList.add('jp-mod-selected');
    }
    return item;
  }

  /** Relative times drift while nothing changes: rewrite them on every poll. */
  private updateTimes(): void {
    const now = Date.now();
    for (const node of this.list.querySelectorAll<HTMLElement>('.nbexp-panel-time')) {
      node.textContent = relativeTime(node.dataset.created ?? '', now);
    }
  }

  private renderMessage(): void {
    this.messageLine.textContent = this.error;
    this.messageLine.hidden = !this.error;
    this.searchInput.classList.toggle('nbexp-mod-invalid', this.error !== '');
  }

  private renderSelection(): void {
    const count = this.selected.size;
    this.clearButton.hidden = count === 0;
    this.compareButton.disabled = count < 2 || this._notebook === null;
    this.compareButton.textContent = count ? `Compare ${count}` : 'Compare selected';
    this.compareButton.title =
      count >= 2
        ? 'Insert a cell below the active one comparing the checked experiments, and run it'
        : 'Check two or more experiments to compare them';
  }

  private onListClick(event: MouseEvent): void {
    const target = event.target as HTMLElement;
    const row = target.closest<HTMLElement>('.nbexp-panel-row');
    if (!row || !this.listing) {
      return;
    }
    const id = row.dataset.id ?? '';
    if (target.classList.contains('nbexp-panel-check')) {
      const data = this.listing.experiments.find(item => item.id === id);
      if ((target as HTMLInputElement).checked && data) {
        this.selected.set(id, { id, short_id: data.short_id, name: data.name });
      } else {
        this.selected.delete(id);
      }
      this.renderSelection();
      return;
    }
    void this.openDetails(id);
  }

  private closeDetails(): void {
    this.openId = null;
    this.detailsTicket += 1;
    this.details.replaceChildren();
    this.details.hidden = true;
    for (const row of this.list.querySelectorAll('.nbexp-panel-row.jp-mod-selected')) {
      row.classList.remove('jp-mod-selected');
    }
  }

  private async openDetails(id: string): Promise<void> {
    if (!id || this.path === null) {
      return;
    }
    this.closeDetails();
    this.openId = id;
    for (const row of this.list.querySelectorAll<HTMLElement>('.nbexp-panel-row')) {
      row.classList.toggle('jp-mod-selected', row.dataset.id === id);
    }
    const ticket = this.detailsTicket;
    const name = this.listing?.experiments.find(row => row.id === id)?.name ?? id.slice(0, 8);
    const close = h('button', {
      className: 'nbexp-panel-close jp-mod-styled',
      text: '×',
      title: 'Close the details',
      attrs: { 'aria-label': 'Close the details' }
    });
    close.addEventListener('click', () => this.closeDetails());
    const restore = h('button', {
      className: 'nbexp-panel-restore jp-mod-styled jp-mod-accept',
      text: 'Restore into kernel',
      title: "Put this experiment's variables back into the notebook's kernel (%exp_restore)"
    });
    const result = h('pre', { className: 'nbexp-panel-result' });
    result.hidden = true;
    restore.addEventListener('click', () => void this.restore(id, restore, result));
    const content = h('div', { className: 'nbexp-panel-details-content', text: 'loading…' });
    this.details.replaceChildren(
      h(
        'div',
        { className: 'nbexp-panel-details-header' },
        h('h3', { className: 'nbexp-panel-details-name', text: name, title: name }),
        close
      ),
      h('div', { className: 'nbexp-panel-actions' }, restore),
      result,
      content
    );
    this.details.hidden = false;
    try {
      const record = await this.client.get(this.path, id);
      if (ticket === this.detailsTicket) {
        content.replaceChildren(...renderRecord(record));
      }
    } catch (error) {
      if (ticket === this.detailsTicket) {
        content.replaceChildren(h('div', { className: 'nbexp-panel-error', text: message(error) }));
      }
    }
  }

  private async restore(id: string, button: HTMLButtonElement, result: HTMLElement): Promise<void> {
    const notebook = this._notebook;
    if (!notebook) {
      return;
    }
    button.disabled = true;
    result.hidden = false;
    result.classList.remove('nbexp-mod-error', 'nbexp-mod-ok');
    result.textContent = 'restoring in the kernel…';
    try {
      const outcome = await restoreIntoKernel(notebook, id);
      result.textContent = outcome.text || (outcome.ok ? 'restored' : 'failed');
      result.classList.add(outcome.ok ? 'nbexp-mod-ok' : 'nbexp-mod-error');
    } catch (error) {
      result.textContent = message(error);
      result.classList.add('nbexp-mod-error');
    } finally {
      button.disabled = false;
    }
  }

  private async compareSelected(): Promise<void> {
    const notebook = this._notebook;
    if (!notebook || this.selected.size < 2) {
      return;
    }
    // In the listing's order (newest first) when the rows are on screen.
    const order = new Map(this.listing?.experiments.map((row, index) => [row.id, index]));
    const chosen = [...this.selected.values()].sort(
      (a, b) => (order.get(a.id) ?? Infinity) - (order.get(b.id) ?? Infinity)
    );
    this.compareButton.disabled = true;
    try {
      await insertComparison(notebook, chosen);
    } catch (error) {
      this.error = message(error);
      this.renderMessage();
    } finally {
      this.renderSelection();
    }
  }

  private client: ExperimentsClient;
  private pollInterval: number;
  private _notebook: NotebookPanel | null = null;
  private path: string | null = null;
  private query = '';
  private limit = PAGE_SIZE;
  private listing: IListing | null = null;
  private error = '';
  private selected = new Map<string, IChosen>();
  private openId: string | null = null;
  private detailsTicket = 0;
  private inFlight: Promise<void> | null = null;
  private queued = false;
  private pollTimer = 0;
  private debounceTimer = 0;

  private searchInput: HTMLInputElement;
  private storeLine: HTMLElement;
  private messageLine: HTMLElement;
  private countLine: HTMLElement;
  private compareButton: HTMLButtonElement;
  private clearButton: HTMLButtonElement;
  private list: HTMLUListElement;
  private moreButton: HTMLButtonElement;
  private empty: HTMLElement;
  private details: HTMLElement;
}
