/**
 * The client of nbexp's server extension (nbexp/server_extension.py, SPEC §10):
 * `GET nbexp/api/experiments` (a page of the listing, with ETag / 304) and
 * `GET nbexp/api/experiments/ID` (one full record), both keyed by the notebook's path.
 * Requests go through `ServerConnection.makeRequest`, so the server's token, XSRF cookie
 * and base URL apply as for JupyterLab's own calls.
 */

import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** A value as nbexp stores it: non-finite floats arrive as {"$float": "nan" | "inf" | "-inf"}. */
export type Value = unknown;

/** Params and metrics as nbexp prints them (`show.format_value`), by name. */
export interface IValueTexts {
  params?: { [name: string]: string };
  metrics?: { [name: string]: string };
}

/** One row of the listing (the index's view of an experiment). */
export interface IExperimentRow {
  id: string;
  short_id: string;
  name: string;
  created: string;
  status: string;
  duration: number | null;
  note: string | null;
  tags: string[];
  params: { [name: string]: Value };
  metrics: { [name: string]: Value };
  notebook?: string | null;
  origin?: string | null;
  text?: IValueTexts;
}

/** A page of the listing, newest first. */
export interface IListing {
  experiments: IExperimentRow[];
  total: number;
  store?: string;
  metric_names?: string[];
}

/** A full record (nbexp/schema/record-v1.json); only the parts the panel reads are typed. */
export interface IRecord {
  id: string;
  name: string;
  created: string;
  params?: { [name: string]: Value };
  metrics?: { [name: string]: Value };
  data?: Array<{ [key: string]: unknown }>;
  artifacts?: Array<{ [key: string]: unknown }>;
  code?: { cell?: string; source?: string; notebook?: string | null };
  outcome?: {
    status?: string;
    started?: string;
    duration?: number;
    error?: { [key: string]: unknown } | null;
  };
  state?: {
    variables?: { [name: string]: { [key: string]: unknown } };
    unstored?: { [name: string]: string };
  } | null;
  env?: { [key: string]: unknown };
  git?: { [key: string]: unknown } | null;
  tags?: string[];
  note?: string | null;
  short_id?: string;
  status?: string;
  text?: IValueTexts;
}

/** What a listing request asks for. */
export interface IListRequest {
  path: string;
  query: string;
  offset: number;
  limit: number;
}

/** A non-2xx answer: `message` is the server's own text (e.g. why a query did not parse). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message);
  }
}

const API = 'nbexp/api/experiments';

function search(params: { [key: string]: string | number }): string {
  return URLExt.objectToQueryString(params);
}

async function failure(response: Response): Promise<ApiError> {
  let message = '';
  try {
    const body = await response.json();
    if (body && typeof body.message === 'string') {
      message = body.message;
    }
  } catch {
    // not JSON (e.g. a proxy's page, or no handler at all)
  }
  if (!message && response.status === 404) {
    message =
      "nbexp's server extension did not answer (404): install nbexp in the Jupyter server's " +
      'environment and restart it (`jupyter server extension list` should show nbexp enabled)';
  }
  return new ApiError(response.status, message || response.statusText || `HTTP ${response.status}`);
}

/**
 * Fetches listings and records. One instance per panel: it remembers the ETag of the last
 * listing it received, so a poll of the same listing costs the server a 304.
 */
export class ExperimentsClient {
  constructor(settings?: ServerConnection.ISettings) {
    this.settings = settings ?? ServerConnection.makeSettings();
  }

  /**
   * The listing, or `null` when it is unchanged since the last one returned for the same
   * request (the server answered 304 to our If-None-Match).
   */
  async list(request: IListRequest): Promise<IListing | null> {
    const key = search({
      path: request.path,
      query: request.query,
      offset: request.offset,
      limit: request.limit
    });
    const url = URLExt.join(this.settings.baseUrl, API) + key;
    const headers: { [name: string]: string } = {};
    if (this.etag !== null && this.etagKey === key) {
      headers['If-None-Match'] = this.etag;
    }
    const response = await ServerConnection.makeRequest(
      url,
      { method: 'GET', headers },
      this.settings
    );
    if (response.status === 304) {
      return null;
    }
    if (!response.ok) {
      throw await failure(response);
    }
    const listing = (await response.json()) as IListing;
    this.etag = response.headers.get('ETag');
    this.etagKey = key;
    return listing;
  }

  /** Forget the last ETag: the next listing is fetched in full. */
  reset(): void {
    this.etag = null;
    this.etagKey = '';
  }

  /** One experiment's full record. */
  async get(path: string, id: string): Promise<IRecord> {
    const url =
      URLExt.join(this.settings.baseUrl, API, encodeURIComponent(id)) + search({ path });
    const response = await ServerConnection.makeRequest(url, { method: 'GET' }, this.settings);
    if (!response.ok) {
      throw await failure(response);
    }
    return (await response.json()) as IRecord;
  }

  private settings: ServerConnection.ISettings;
  private etag: string | null = null;
  private etagKey = '';
}
