/**
 * One experiment's record as the details section of the panel: summary, params, metrics,
 * data inputs, variables and the cell's code.
 */

import { IRecord } from './api';
import { absoluteTime, bytes, duration, h, valueText } from './format';

function section(title: string, body: HTMLElement | null): HTMLElement | null {
  if (body === null) {
    return null;
  }
  return h(
    'section',
    { className: 'nbexp-panel-section' },
    h('h3', { className: 'nbexp-panel-section-title', text: title }),
    body
  );
}

/** A two-column table of name → value; null when there is nothing to show. */
function pairs(entries: Array<[string, string]>, className: string): HTMLElement | null {
  if (entries.length === 0) {
    return null;
  }
  const table = h('table', { className: `nbexp-panel-kv ${className}` });
  for (const [key, value] of entries) {
    table.append(
      h(
        'tr',
        {},
        h('th', { text: key, title: key }),
        h('td', { text: value, title: value })
      )
    );
  }
  return table;
}

function values(
  map: { [name: string]: unknown } | undefined,
  texts: { [name: string]: string } | undefined
): Array<[string, string]> {
  return Object.entries(map ?? {}).map(([key, value]) => [key, valueText(value, texts?.[key])]);
}

function dataInputs(record: IRecord): HTMLElement | null {
  const items = record.data ?? [];
  if (items.length === 0) {
    return null;
  }
  const list = h('ul', { className: 'nbexp-panel-data' });
  for (const item of items) {
    const hash = typeof item.hash === 'string' ? item.hash.slice(0, 8) : '';
    let label: string;
    let facts: string[];
    if (item.kind === 'file') {
      label = String(item.path ?? item.abspath ?? '?');
      facts = [bytes(item.size)];
    } else {
      label = String(item.name ?? '?');
      facts = [String(item.type ?? '')];
    }
    if (typeof item.rows === 'number') {
      facts.push(`${item.rows.toLocaleString()} rows`);
    }
    if (Array.isArray(item.shape) && item.rows === undefined) {
      facts.push(item.shape.join(' × '));
    }
    if (Array.isArray(item.columns)) {
      facts.push(`${item.columns.length} columns`);
    }
    facts.push(hash);
    list.append(
      h(
        'li',
        {},
        h('span', { className: 'nbexp-panel-data-name', text: label, title: label }),
        h('span', {
          className: 'nbexp-panel-data-facts',
          text: facts.filter(fact => fact).join(' · ')
        })
      )
    );
  }
  return list;
}

function variables(record: IRecord): HTMLElement | null {
  const state = record.state;
  if (!state) {
    return null;
  }
  const entries: Array<[string, string]> = Object.entries(state.variables ?? {}).map(
    ([name, info]) => [name, [info.type, bytes(info.size)].filter(x => x).join(' · ')]
  );
  for (const [name, why] of Object.entries(state.unstored ?? {})) {
    entries.push([name, `not stored: ${why}`]);
  }
  return pairs(entries, 'nbexp-panel-variables');
}

function code(record: IRecord): HTMLElement | null {
  const text = record.code?.cell ?? record.code?.source;
  if (!text) {
    return null;
  }
  return h('pre', { className: 'nbexp-panel-code', text });
}

/** The summary line under the name: id, status, time, duration, tags, note. */
function summary(record: IRecord): HTMLElement {
  const status = record.outcome?.status ?? record.status ?? '';
  const facts = [
    (record.short_id ?? record.id.slice(0, 8)),
    absoluteTime(record.created),
    duration(record.outcome?.duration)
  ].filter(fact => fact);
  const node = h(
    'div',
    { className: 'nbexp-panel-summary' },
    h('span', {
      className: `nbexp-panel-status nbexp-panel-status-${status}`,
      text: status
    }),
    ' ',
    facts.join(' · ')
  );
  if (record.tags && record.tags.length > 0) {
    node.append(
      h(
        'div',
        { className: 'nbexp-panel-tags' },
        ...record.tags.map(tag => h('span', { className: 'nbexp-panel-tag', text: tag }))
      )
    );
  }
  if (record.note) {
    node.append(h('div', { className: 'nbexp-panel-note', text: record.note }));
  }
  const error = record.outcome?.error;
  if (error && typeof error === 'object') {
    const text = [error.type ?? error.ename, error.message ?? error.evalue]
      .filter(part => part)
      .join(': ');
    if (text) {
      node.append(h('div', { className: 'nbexp-panel-error', text }));
    }
  }
  return node;
}

/** The record's sections, in reading order. */
export function renderRecord(record: IRecord): HTMLElement[] {
  const parts = [
    summary(record),
    section('Params', pairs(values(record.params, record.text?.params), 'nbexp-panel-params')),
    section('Metrics', pairs(values(record.metrics, record.text?.metrics), 'nbexp-panel-metrics-table')),
    section('Data inputs', dataInputs(record)),
    section('Variables', variables(record)),
    section('Code', code(record))
  ];
  return parts.filter((part): part is HTMLElement => part !== null);
}
