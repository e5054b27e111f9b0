//! Every built-in rule with true- and false-positive examples, checked by one data-driven
//! test; the providers the built-in rules cover, kept in the README; a corpus of near misses
//! that no rule may fire on.
//!
//! Examples are templates: `<cls:N>` expands to N deterministic pseudo-random characters of a
//! class, and `<nil>` to nothing (it breaks up literal prefixes), so no literal token appears
//! in this file (push-protection scanners stay quiet). Classes: `an` alnum, `al` letters,
//! `lo` lower+digits, `up` upper+digits, `hex`, `HEX`, `ah` a-h and digits, `d` digits, `b64`
//! base64, `url` base64url, `b32` A-Z2-7, `age` bech32 upper.
//!
//! Three shapes: `case` lists examples; `tok` is a prefixed token (prefix, body): it must be
//! found bare-quoted and in JSON, and not when cut short or when its body is a placeholder
//! of `x`s; `kw` is a value assigned to a provider's name (name, value): it must be found in
//! `name = "value"` and `export name=value`, and not for `${NAME}` or a placeholder of `x`s.

use super::{ALNUM, fill};
use crate::scanner::{Finding, Scanner};

enum Example {
    Case {
        rule: &'static str,
        path: &'static str,
        tp: &'static [&'static str],
        fp: &'static [&'static str],
    },
    Tok {
        rule: &'static str,
        prefix: &'static str,
        body: &'static str,
    },
    Kw {
        rule: &'static str,
        name: &'static str,
        value: &'static str,
    },
}

const PATH: &str = "src/config.txt";

const fn case(
    rule: &'static str,
    tp: &'static [&'static str],
    fp: &'static [&'static str],
) -> Example {
    Example::Case {
        rule,
        path: PATH,
        tp,
        fp,
    }
}

/// Examples in a file at `path` (for a rule scoped by path).
const fn case_at(
    rule: &'static str,
    path: &'static str,
    tp: &'static [&'static str],
    fp: &'static [&'static str],
) -> Example {
    Example::Case { rule, path, tp, fp }
}

const fn tok(rule: &'static str, prefix: &'static str, body: &'static str) -> Example {
    Example::Tok { rule, prefix, body }
}

const fn kw(rule: &'static str, name: &'static str, value: &'static str) -> Example {
    Example::Kw { rule, name, value }
}

#[rustfmt::skip]
const EXAMPLES: &[Example] = &[
    case("aws-access-key-id", &["aws_access_key_id = AK<nil>IA<b32:16>", "\"ASIA<b32:16>\""], &["AKIA<nil>IOSFODNN7EXAMPLE", "AKIA<nil>AAAAAAAAAAAAAAAA", "AKIA<b32:10>"]),
    case("aws-secret-access-key", &["aws_secret_access_key = <b64:40>", "AWS_SECRET_KEY: \"<b64:40>\""], &["aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCY<nil>EXAMPLEKEY", "aws_secret_access_key = <b64:20>"]),
    kw("aws-session-token", "aws_session_token", "<b64:300>"),
    tok("aws-mws-key", "amzn.<nil>mws.", "<hex:8>-<hex:4>-<hex:4>-<hex:4>-<hex:12>"),
    tok("gcp-api-key", "AI<nil>za", "<url:35>"),
    case("gcp-service-account-key", &["\"private_key_id\": \"<hex:40>\",", "{\"private_key_id\":\"<hex:40>\"}"], &["\"private_key_id\": \"<hex:12>\",", "\"private_key_id\": \"0000000000000000000000000000000000000000\","]),
    tok("google-oauth-client-secret", "GOC<nil>SPX-", "<url:28>"),
    tok("google-oauth-access-token", "ya<nil>29.", "<url:60>"),
    case("azure-storage-account-key", &["DefaultEndpointsProtocol=https;AccountName=x;Account<nil>Key=<b64:86>==;EndpointSuffix=core", "\"AccountKey=<b64:86>==\""], &["Account<nil>Key=<redacted>", "AccountKey=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="]),
    case("azure-shared-access-key", &["Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=Root;Shared<nil>AccessKey=<b64:43>=", "\"SharedAccessKey=<b64:43>=\""], &["SharedAccessKey={{ sb_key }}", "SharedAccessKeyName=RootManageSharedAccessKey"]),
    case("azure-sas-token", &["https://acct.blob.core.windows.net/c/f?sv=2022-11-02&ss=b&srt=o&sp=r&se=2030-01-01&sig=<b64:43>%3D", "SAS=\"sv=2021-08-06&sr=c&sp=rl&sig=<an:44>\""], &["?sv=2022-11-02&sig=<SIGNATURE>", "sv=2022-11-02&sp=r&sig=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"]),
    case("azure-ad-client-secret", &["client_secret = \"<an:3>8Q<nil>~<an:34>\"", "AZURE_CLIENT_SECRET=<an:3>7Q<nil>~<an:32>"], &["see Q<nil>~ menu", "version 1.2Q~3"]),
    case("azure-devops-pat", &["ADO_PAT=<an:76>AZ<nil>DO<an:4>", "\"<an:76>AZDO<an:4>\""], &["ticket AZ<nil>DO-1234", "<an:20>AZDO<an:4>"]),
    tok("alibaba-access-key-id", "LT<nil>AI", "<an:20>"),
    kw("alibaba-secret-key", "alibaba_access_key_secret", "<lo:30>"),
    tok("digitalocean-pat", "dop<nil>_v1_", "<hex:64>"),
    tok("digitalocean-oauth-token", "doo<nil>_v1_", "<hex:64>"),
    tok("digitalocean-refresh-token", "dor<nil>_v1_", "<hex:64>"),
    case("heroku-api-key", &["HEROKU_API_KEY=<hex:8>-<hex:4>-<hex:4>-<hex:4>-<hex:12>", "heroku_token: \"<hex:8>-<hex:4>-<hex:4>-<hex:4>-<hex:12>\""], &["heroku_app_name = my-app", "heroku_api_key = ${HEROKU_API_KEY}"]),
    tok("heroku-api-key-v2", "HR<nil>KU-AA", "<url:58>"),
    case("cloudflare-origin-ca-key", &["v1.<nil>0-<hex:24>-<hex:146>", "key=\"v1.0-<hex:24>-<hex:146>\""], &["version v1.<nil>0-beta", "v1.0-<hex:24>"]),
    kw("cloudflare-api-token", "cloudflare_api_token", "<url:40>"),
    case("flyio-access-token", &["FLY_API_TOKEN=fo<nil>1_<url:43>", "FLY_API_TOKEN=\"FlyV1 fm2<nil>_<b64:150>\""], &["fo<nil>1_short", "fm2_ is the macaroon prefix"]),
    tok("supabase-access-token", "sb<nil>p_", "<hex:40>"),
    tok("planetscale-token", "pscale<nil>_tkn_", "<url:43>"),
    kw("ibm-cloud-api-key", "ibmcloud_api_key", "<url:44>"),
    kw("vercel-access-token", "VERCEL_TOKEN", "<an:24>"),
    kw("netlify-access-token", "NETLIFY_AUTH_TOKEN", "<url:43>"),
    kw("linode-token", "LINODE_TOKEN", "<hex:64>"),
    tok("scalingo-api-token", "tk-<nil>us-", "<url:48>"),
    kw("yandex-api-key", "yandex_api_key", "AQ<nil>VN<url:36>"),
    kw("yandex-access-token", "yandex_iam_token", "t1.<url:20>.<url:86>"),
    kw("yandex-aws-access-token", "yandex_access_key", "YC<url:38>"),
    tok("openshift-user-token", "sha256<nil>~", "<url:43>"),
    tok("infracost-api-token", "ico<nil>-", "<an:32>"),
    tok("clickhouse-cloud-api-secret", "4b<nil>1d", "<an:38>"),
    case("defined-networking-api-token", &["DN_API_KEY=dnkey<nil>-<lo:26>-<lo:52>", "\"dnkey-<lo:26>-<lo:52>\""], &["dnkey-short", "dnkey<nil>-xxxxxxxxxxxxxxxxxxxxxxxxxx-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"]),
    tok("github-pat", "gh<nil>p_", "<an:36>"),
    tok("github-fine-grained-pat", "github<nil>_pat_", "<an:22>_<an:59>"),
    tok("github-oauth", "gh<nil>o_", "<an:36>"),
    case("github-app-token", &["gh<nil>s_<an:36>", "token: gh<nil>u_<an:36>"], &["gh<nil>s_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "ghs_<an:12>"]),
    tok("github-refresh-token", "gh<nil>r_", "<an:76>"),
    case("gitlab-pat", &["GITLAB_TOKEN=gl<nil>pat-<url:20>", "\"gl<nil>pat-<url:27>.01<lo:7>\""], &["gl<nil>pat-xxxxxxxxxxxxxxxxxxxx", "glpat-<url:8>"]),
    tok("gitlab-pipeline-trigger-token", "gl<nil>ptt-", "<hex:40>"),
    case("gitlab-runner-token", &["gl<nil>rt-<url:20>", "token = \"gl<nil>rt-t1_<url:27>.01<lo:7>\""], &["gl<nil>rt-xxxxxxxxxxxxxxxxxxxx", "glrt-<url:8>"]),
    tok("gitlab-runner-registration-token", "GR13<nil>48941", "<url:20>"),
    tok("gitlab-deploy-token", "gl<nil>dt-", "<url:20>"),
    tok("gitlab-oauth-app-secret", "gl<nil>oas-", "<url:64>"),
    tok("gitlab-cicd-job-token", "gl<nil>cbt-", "<an:2>_<url:20>"),
    tok("gitlab-feature-flag-token", "gl<nil>ffct-", "<url:20>"),
    tok("gitlab-feed-token", "gl<nil>ft-", "<url:20>"),
    tok("gitlab-incoming-mail-token", "gl<nil>imt-", "<url:25>"),
    tok("gitlab-kubernetes-agent-token", "gl<nil>agent-", "<url:50>"),
    tok("gitlab-scim-token", "gl<nil>soat-", "<url:20>"),
    case("gitlab-session-cookie", &["Cookie: _gitlab<nil>_session=<lo:32>", "curl -b \"_gitlab_session=<lo:32>\""], &["_gitlab_session=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "_gitlab_session=<lo:10>"]),
    tok("bitbucket-app-password", "AT<nil>BB", "<an:32>"),
    kw("bitbucket-client-secret", "bitbucket_client_secret", "<url:64>"),
    case("gitea-token", &["GITEA_TOKEN=<hex:40>", "forgejo_token: \"<hex:40>\""], &["gitea_url: https://gitea.example.test", "GITEA_TOKEN=${{ secrets.GITEA_TOKEN }}"]),
    tok("atlassian-api-token", "ATA<nil>TT3", "<url:186>"),
    kw("atlassian-legacy-api-token", "JIRA_API_TOKEN", "<lo:20><hex:4>"),
    case("sourcegraph-access-token", &["SRC_ACCESS_TOKEN=sg<nil>p_<hex:16>_<hex:40>", "\"sg<nil>p_<hex:40>\""], &["sg<nil>p_<hex:10>", "sgp_local_short"]),
    tok("circleci-pat", "CCI<nil>PAT_", "<an:22>_<hex:40>"),
    kw("circleci-legacy-token", "CIRCLE_TOKEN", "<hex:40>"),
    kw("travisci-access-token", "travis_api_token", "<lo:22>"),
    tok("buildkite-api-token", "bk<nil>ua_", "<hex:40>"),
    kw("jenkins-api-token", "jenkins_api_token", "11<hex:32>"),
    kw("droneci-access-token", "DRONE_TOKEN", "<lo:32>"),
    kw("codecov-access-token", "CODECOV_TOKEN", "<hex:8>-<hex:4>-<hex:4>-<hex:4>-<hex:12>"),
    kw("sonar-api-token", "SONAR_TOKEN", "<lo:40>"),
    case("snyk-api-token", &["SNYK_TOKEN=<hex:8>-<hex:4>-<hex:4>-<hex:4>-<hex:12>", "snyk_api_key: \"<hex:8>-<hex:4>-<hex:4>-<hex:4>-<hex:12>\""], &["run snyk test --all-projects", "SNYK_TOKEN=${SNYK_TOKEN}"]),
    tok("octopus-deploy-api-key", "AP<nil>I-", "<up:26>"),
    case("harness-access-token", &["HARNESS_TOKEN=pa<nil>t.<url:22>.<an:24>.<an:20>", "\"sa<nil>t.<url:22>.<an:24>.<an:20>\""], &["pat.<an:10>", "see pat.md and sat.txt"]),
    case("hashicorp-tf-api-token", &["token = \"<an:14>.atlas<nil>v1.<url:64>\"", "TF_TOKEN_app_terraform_io=<an:14>.atlasv1.<url:66>"], &["foo.atlas<nil>v1.bar", "<an:14>.atlasv1.<url:20>"]),
    tok("vault-service-token", "hv<nil>s.", "<url:95>"),
    tok("vault-batch-token", "hv<nil>b.", "<url:150>"),
    tok("pulumi-api-token", "pu<nil>l-", "<hex:40>"),
    tok("doppler-api-token", "dp.<nil>pt.", "<an:43>"),
    tok("docker-hub-pat", "dckr<nil>_pat_", "<url:27>"),
    case("kubernetes-kubeconfig-token", &["users:\n- name: u\n  user:\n    token: ey<nil>J<url:200>", "client-key-data: LS0tLS1CRUd<nil>JTi<b64:300>"], &["token: ${K8S_TOKEN}", "client-key-data: REDACTED"]),
    tok("sentry-user-token", "sntr<nil>yu_", "<hex:64>"),
    tok("sentry-org-token", "sntr<nil>ys_eyJ", "<b64:80>"),
    case("sentry-dsn", &["SENTRY_DSN=https://<hex:32>@o<d:6>.ingest.sen<nil>try.io/<d:7>", "dsn: \"https://<hex:32>@sentry.io/<d:5>\""], &["SENTRY_DSN=https://examplePublicKey@o0.ingest.sentry.io/0", "https://docs.sentry.io/platforms/"]),
    kw("sentry-access-token", "SENTRY_API_TOKEN", "<hex:64>"),
    tok("dynatrace-api-token", "dt0<nil>c01.", "<up:24>.<up:64>"),
    tok("databricks-api-token", "da<nil>pi", "<hex:32>"),
    tok("grafana-cloud-api-token", "gl<nil>c_", "<b64:48>"),
    tok("grafana-service-account-token", "gl<nil>sa_", "<an:32>_<hex:8>"),
    tok("grafana-api-key", "eyJr<nil>Ijoi", "<an:80>"),
    tok("new-relic-user-api-key", "NR<nil>AK-", "<up:27>"),
    tok("new-relic-insert-key", "NR<nil>II-", "<url:32>"),
    tok("new-relic-browser-api-token", "NR<nil>JS-", "<hex:19>"),
    case("datadog-api-key", &["DD_API_KEY=<hex:32>", "datadog_app_key: '<hex:40>'"], &["DD_API_KEY=${DD_API_KEY}", "dd.api_key_header = \"DD-API-KEY\""]),
    kw("sumologic-access-token", "SUMO_ACCESS_KEY", "<an:64>"),
    tok("postman-api-token", "PM<nil>AK-", "<hex:24>-<hex:34>"),
    kw("launchdarkly-access-token", "LAUNCHDARKLY_ACCESS_TOKEN", "api-<hex:8>-<hex:4>-<hex:4>-<hex:4>-<hex:12>"),
    kw("algolia-api-key", "ALGOLIA_ADMIN_KEY", "<lo:32>"),
    kw("meraki-api-key", "MERAKI_DASHBOARD_API_KEY", "<hex:40>"),
    case("mongodb-connection-string", &["MONGO_URL=mongodb+srv://app:<an:16>@cluster0.x1y2z.mongodb.net/db", "\"mongodb://root:<an:20>@mongo:27017/admin\""], &["mongodb://app:${MONGO_PASSWORD}@mongo:27017/db", "mongodb://user:password@localhost:27017"]),
    case("postgres-connection-string", &["DATABASE_URL=postgres://app:<an:16>@db.internal:5432/app", "postgresql+psycopg://svc:<an:20>@10.0.0.5/prod"], &["postgres://app:${DB_PASSWORD}@db/app", "postgresql://postgres:changeme@localhost/postgres"]),
    case("mysql-connection-string", &["MYSQL_URL=mysql://root:<an:16>@mysql:3306/shop", "mariadb://svc:<an:18>@db.internal/app"], &["mysql://root:$MYSQL_ROOT_PASSWORD@mysql:3306/shop", "mysql://user:password@localhost/db"]),
    case("redis-connection-string", &["REDIS_URL=redis://:<an:24>@cache.internal:6379/0", "rediss://default:<an:32>@redis.example.test:6380"], &["redis://:${REDIS_PASSWORD}@cache:6379", "redis://localhost:6379/0"]),
    case("amqp-connection-string", &["AMQP_URL=amqp://app:<an:16>@rabbit:5672/vhost", "amqps://svc:<an:20>@mq.internal/"], &["amqp://guest:{{ rabbit_password }}@rabbit:5672/", "amqp://rabbit:5672/"]),
    case("jdbc-connection-string", &["url=jdbc:sqlserver://db:1433;databaseName=app;user=sa;password=<an:16>", "\"jdbc:mysql://db:3306/app?user=app&password=<an:18>\""], &["jdbc:postgresql://db/app?user=app&password=${DB_PASS}", "jdbc:h2:mem:test;password=****"]),
    case("sqlserver-connection-string", &["\"Server=tcp:db.internal,1433;Database=app;User ID=sa;Password=<an:16>;\"", "Data Source=db;Initial Catalog=app;User Id=app;Pwd=<an:18>;"], &["Server=db;Database=app;Password={db_password};", "Server=db;Database=app;Trusted_Connection=True;"]),
    tok("npm-access-token", "np<nil>m_", "<an:36>"),
    case("npmrc-auth-token", &["//npm.example.test/:_auth<nil>Token=<an:36>", "//registry.npmjs.org/:_authToken=<b64:40>"], &["//npm.example.test/:_auth<nil>Token=${NPM_TOKEN}", "//npm.example.test/:_authToken=$NPM_TOKEN"]),
    tok("pypi-upload-token", "py<nil>pi-AgEIcHlwaS5vcmc", "<url:70>"),
    tok("rubygems-api-token", "rubygems<nil>_", "<hex:48>"),
    tok("clojars-api-token", "CLOJARS<nil>_", "<lo:60>"),
    tok("nuget-api-key", "oy<nil>2", "<lo:43>"),
    tok("crates-io-api-token", "ci<nil>o", "<an:32>"),
    tok("artifactory-api-key", "AK<nil>Cp", "<an:69>"),
    tok("artifactory-reference-token", "cmV<nil>md", "<an:59>"),
    kw("jfrog-api-key", "ARTIFACTORY_API_KEY", "<lo:73>"),
    case("slack-bot-token", &["SLACK_BOT_TOKEN=xo<nil>xb-<d:12>-<d:13>-<an:24>", "\"xo<nil>xb-<d:11>-<d:12>-<an:30>\""], &["xo<nil>xb-123-456-abc", "xoxb-000000000000-0000000000000-xxxxxxxxxxxxxxxxxxxxxxxx"]),
    case("slack-legacy-bot-token", &["SLACK_TOKEN=xo<nil>xb-<d:10>-<an:24>", "\"xo<nil>xb-<d:12>-<an:20>\""], &["xoxb-<d:10>-short", "xoxb-1234"]),
    case("slack-user-token", &["xo<nil>xp-<d:12>-<d:12>-<d:12>-<hex:32>", "SLACK_USER_TOKEN=\"xo<nil>xp-<d:11>-<d:13>-<d:12>-<hex:32>\""], &["xo<nil>xp-1234", "xoxp-0000000000-0000000000-0000000000-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"]),
    case("slack-app-token", &["xa<nil>pp-1-<up:11>-<d:13>-<hex:64>", "SLACK_APP_TOKEN=\"xa<nil>pp-1-A<up:10>-<d:13>-<hex:64>\""], &["xa<nil>pp-1-foo", "xapp-1-XXXXXXXXXXX-0000000000000-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"]),
    case("slack-config-access-token", &["xo<nil>xe.xo<nil>xp-1-<up:164>", "SLACK_CONFIG_TOKEN=\"xo<nil>xe.xo<nil>xb-1-<up:163>\""], &["xoxe.xoxp-1-short", "xoxe.xoxp-1-<up:20>"]),
    case("slack-config-refresh-token", &["xo<nil>xe-1-<up:146>", "SLACK_REFRESH=\"xo<nil>xe-1-<up:146>\""], &["xoxe-1-short", "xoxe-1-<up:40>"]),
    case("slack-legacy-token", &["xo<nil>xs-<d:10>-<d:10>-<d:10>-<hex:64>", "\"xo<nil>xo-<d:9>-<d:9>-<d:9>-<hex:32>\""], &["xoxs-1-2-3", "xoxs-0-0-0-0000"]),
    case("slack-legacy-workspace-token", &["xo<nil>xa-2-<an:40>", "SLACK_TOKEN=\"xo<nil>xr-<an:32>\""], &["xoxa-short", "xoxr-xxxxxxxxxxxxxxxxxxxxxxxx"]),
    case("slack-webhook-url", &["url: https://hooks.sl<nil>ack.com/services/T<up:8>/B<up:10>/<an:24>", "\"https://hooks.sl<nil>ack.com/workflows/T<up:8>/A<up:10>/<d:18>/<an:24>\""], &["https://hooks.sl<nil>ack.com/services/T000/B000/XXXX", "see hooks.slack.com/services for setup"]),
    case("discord-webhook-url", &["https://disc<nil>ord.com/api/webhooks/<d:18>/<url:68>", "\"https://discordapp.com/api/webhooks/<d:19>/<url:68>\""], &["https://disc<nil>ord.com/api/webhooks/123/abc", "https://discord.com/api/webhooks/{id}/{token}"]),
    kw("discord-api-token", "DISCORD_BOT_SECRET", "<hex:64>"),
    case("telegram-bot-token", &["TELEGRAM_BOT_TOKEN=<d:10>:A<nil>A<url:33>", "bot = \"<d:9>:AA<url:33>\""], &["time 12:A<nil>A", "<d:10>:AAxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"]),
    tok("twilio-api-key", "S<nil>K", "<hex:32>"),
    kw("twilio-auth-token", "TWILIO_AUTH_TOKEN", "<hex:32>"),
    case("sendgrid-api-token", &["SENDGRID_API_KEY=SG<nil>.<url:22>.<url:43>", "\"SG<nil>.<url:22>.<url:43>\""], &["SG<nil>.short", "SG.xxxxxxxxxxxxxxxxxxxxxx.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"]),
    tok("sendinblue-api-token", "xkey<nil>sib-", "<hex:64>-<an:16>"),
    tok("mailgun-api-key", "ke<nil>y-", "<hex:32>"),
    kw("mailgun-pub-key", "MAILGUN_PUBLIC_KEY", "pubkey-<hex:32>"),
    kw("mailgun-signing-key", "mailgun_webhook_signing_key", "<hex:32>-<hex:8>-<hex:8>"),
    case("mailchimp-api-key", &["MAILCHIMP_KEY=<hex:32>-u<nil>s12", "\"<hex:32>-us6\""], &["locale en-u<nil>s", "00000000000000000000000000000000-us1"]),
    kw("postmark-server-token", "POSTMARK_SERVER_TOKEN", "<hex:8>-<hex:4>-<hex:4>-<hex:4>-<hex:12>"),
    case("microsoft-teams-webhook", &["https://acme.webhook.off<nil>ice.com/webhookb2/<hex:8>-<hex:4>-<hex:4>-<hex:4>-<hex:12>@<hex:8>-<hex:4>-<hex:4>-<hex:4>-<hex:12>/IncomingWebhook/<hex:32>/<hex:8>-<hex:4>-<hex:4>-<hex:4>-<hex:12>", "webhook_url: \"https://contoso.webhook.office.com/webhookb2/<hex:8>-<hex:4>-<hex:4>-<hex:4>-<hex:12>@<hex:8>-<hex:4>-<hex:4>-<hex:4>-<hex:12>/IncomingWebhook/<hex:32>/<hex:8>-<hex:4>-<hex:4>-<hex:4>-<hex:12>\""], &["https://acme.webhook.office.com/webhookb2/...", "docs: webhook.office.com/webhookb2/{group}@{tenant}/IncomingWebhook/{id}/{owner}"]),
    kw("mattermost-access-token", "MATTERMOST_TOKEN", "<lo:26>"),
    kw("messagebird-api-token", "MESSAGEBIRD_API_KEY", "<lo:25>"),
    kw("sendbird-access-token", "SENDBIRD_API_TOKEN", "<hex:40>"),
    kw("intercom-api-key", "INTERCOM_ACCESS_TOKEN", "<url:60>"),
    kw("zendesk-secret-key", "ZENDESK_API_TOKEN", "<an:40>"),
    kw("twitch-api-token", "TWITCH_CLIENT_SECRET", "<lo:30>"),
    case("stripe-secret-key", &["STRIPE_KEY=sk<nil>_live_<an:24>", "\"rk<nil>_test_<an:24>\""], &["sk<nil>_test_xxxxxxxxxxxxxxxxxxxxxxxx", "sk_live_<an:4>"]),
    tok("stripe-webhook-secret", "wh<nil>sec_", "<an:32>"),
    case("square-access-token", &["sq0<nil>atp-<url:22>", "SQUARE_ACCESS_TOKEN=EA<nil>AA<url:60>"], &["EA<nil>AAbc", "sq0atp-xxxxxxxxxxxxxxxxxxxxxx"]),
    tok("square-oauth-secret", "sq0<nil>csp-", "<url:43>"),
    tok("shopify-access-token", "shp<nil>at_", "<hex:32>"),
    tok("shopify-shared-secret", "shp<nil>ss_", "<hex:32>"),
    tok("shippo-api-token", "shippo<nil>_live_", "<hex:40>"),
    case("braintree-access-token", &["BT_ACCESS_TOKEN=access<nil>_token$production$<lo:16>$<hex:32>", "'accessToken' => 'access<nil>_token$sandbox$<lo:16>$<hex:32>'"], &["access_token$production$xxxxxxxxxxxxxxxx$xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "access_token$production$"]),
    tok("paypal-access-token", "A21<nil>AA", "<url:80>"),
    case("adyen-api-key", &["ADYEN_API_KEY=AQ<nil>E<b64:80>=-<b64:43>=", "apiKey: 'AQ<nil>E<b64:90>=-<b64:44>'"], &["ADYEN_API_KEY=AQE...", "AQEshort=-short"]),
    case("flutterwave-secret-key", &["FLW_SECRET_KEY=FLWSECK<nil>_TEST-<ah:32>-X", "\"FLWPUBK<nil>_TEST-<ah:32>-X\""], &["FLWSECK_TEST-xxxxxxxx-X", "FLWSECK_TEST-00000000000000000000000000000000-X"]),
    case("flutterwave-encryption-key", &["FLW_ENCRYPTION_KEY=FLWSECK<nil>_TEST<ah:12>", "\"FLWSECK<nil>_TEST<ah:12>\""], &["FLWSECK_TESTshort", "FLWSECK_TEST000000000000"]),
    kw("gocardless-api-token", "GOCARDLESS_ACCESS_TOKEN", "live_<url:40>"),
    kw("plaid-api-token", "PLAID_ACCESS_TOKEN", "access-production-<hex:8>-<hex:4>-<hex:4>-<hex:4>-<hex:12>"),
    kw("plaid-secret-key", "PLAID_SECRET", "<lo:30>"),
    kw("coinbase-access-token", "COINBASE_API_SECRET", "<url:64>"),
    kw("kraken-access-token", "KRAKEN_PRIVATE_KEY", "<b64:86>=="),
    kw("kucoin-access-token", "KUCOIN_API_KEY", "<hex:24>"),
    kw("bittrex-access-key", "BITTREX_API_SECRET", "<lo:32>"),
    kw("finicity-api-token", "FINICITY_APP_KEY", "<hex:32>"),
    kw("finnhub-access-token", "FINNHUB_API_KEY", "<lo:20>"),
    tok("duffel-api-token", "duffel<nil>_live_", "<url:43>"),
    tok("easypost-api-token", "EZ<nil>AK", "<an:54>"),
    kw("freshbooks-access-token", "FRESHBOOKS_TOKEN", "<lo:64>"),
    kw("squarespace-access-token", "SQUARESPACE_API_KEY", "<hex:8>-<hex:4>-<hex:4>-<hex:4>-<hex:12>"),
    kw("etsy-access-token", "ETSY_API_KEY", "<lo:24>"),
    kw("hubspot-api-key", "HUBSPOT_API_KEY", "<hex:8>-<hex:4>-<hex:4>-<hex:4>-<hex:12>"),
    tok("hubspot-private-app-token", "pat-<nil>na1-", "<hex:8>-<hex:4>-<hex:4>-<hex:4>-<hex:12>"),
    tok("facebook-access-token", "EA<nil>AC", "<an:120>"),
    kw("facebook-app-secret", "FACEBOOK_APP_SECRET", "<hex:32>"),
    case("twitter-bearer-token", &["BEARER=AAAAAAAAAAA<nil>AAAAAAAAAAA<an:90>", "\"AAAAAAAAAAAAAAA<nil>AAAAAAA<an:100>\""], &["AAAAAAAAAAA<nil>AAAAAAAAAAAshort", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]),
    kw("twitter-api-secret", "TWITTER_CONSUMER_SECRET", "<an:50>"),
    kw("twitter-access-token", "twitter_access_token", "<d:19>-<an:30>"),
    kw("linkedin-client-secret", "LINKEDIN_CLIENT_SECRET", "<an:16>"),
    kw("dropbox-api-token", "DROPBOX_ACCESS_TOKEN", "sl.<url:135>"),
    kw("flickr-access-token", "FLICKR_API_KEY", "<lo:32>"),
    kw("nytimes-access-token", "NYTIMES_API_KEY", "<an:32>"),
    kw("yelp-api-key", "YELP_API_KEY", "<url:128>"),
    case("anthropic-api-key", &["ANTHROPIC_API_KEY=sk-<nil>ant-api03-<url:93>AA", "{\"key\": \"sk-<nil>ant-api03-<url:93>AA\"}"], &["sk-<nil>ant-api03-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxAA", "sk-<nil>ant-api03-<url:20>"]),
    tok("anthropic-admin-key", "sk-<nil>ant-admin01-", "<url:93>AA"),
    case("openai-api-key", &["OPENAI_API_KEY=sk-<nil>proj-<url:74>T3Blb<nil>kFJ<url:74>", "sk-<nil><an:20>T3Blb<nil>kFJ<an:20>"], &["sk-<nil>proj-abc", "T3Blb<nil>kFJ"]),
    case("huggingface-access-token", &["HF_TOKEN=h<nil>f_<al:34>", "token = \"h<nil>f_<al:34>\""], &["h<nil>f_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "h<nil>f_hub_download"]),
    tok("huggingface-org-api-token", "api<nil>_org_", "<al:34>"),
    tok("groq-api-key", "gs<nil>k_", "<an:52>"),
    tok("xai-api-key", "xa<nil>i-", "<an:80>"),
    tok("perplexity-api-key", "pp<nil>lx-", "<an:48>"),
    tok("replicate-api-token", "r<nil>8_", "<an:37>"),
    tok("openrouter-api-key", "sk-<nil>or-v1-", "<hex:64>"),
    tok("langsmith-api-key", "lsv<nil>2_pt_", "<hex:32>_<hex:10>"),
    kw("cohere-api-token", "CO_API_KEY", "<an:40>"),
    kw("mistral-api-key", "MISTRAL_API_KEY", "<an:32>"),
    kw("privateai-api-token", "PRIVATE_AI_API_KEY", "<lo:32>"),
    tok("linear-api-key", "lin<nil>_api_", "<an:40>"),
    kw("linear-client-secret", "LINEAR_CLIENT_SECRET", "<hex:32>"),
    tok("notion-integration-token", "nt<nil>n_", "<d:11><an:35>"),
    case("airtable-pat", &["pa<nil>t<an:14>.<hex:64>", "AIRTABLE_TOKEN=\"pa<nil>t<an:14>.<hex:64>\""], &["pattern.match", "pat<an:14>.<hex:10>"]),
    kw("airtable-api-key", "AIRTABLE_API_KEY", "key<lo:14>"),
    tok("contentful-pat", "CFP<nil>AT-", "<url:43>"),
    kw("contentful-delivery-token", "CONTENTFUL_DELIVERY_TOKEN", "<url:43>"),
    tok("typeform-api-token", "tf<nil>p_", "<url:59>"),
    case("mapbox-secret-token", &["MAPBOX_SECRET=s<nil>k.eyJ<url:60>.<url:22>", "\"s<nil>k.eyJ<url:80>.<url:30>\""], &["s<nil>k.eyJshort", "sk.eyJ<url:10>.<url:22>"]),
    tok("onepassword-service-account-token", "op<nil>s_eyJ", "<b64:260>"),
    case("onepassword-secret-key", &["OP_SECRET_KEY=A3<nil>-<up:6>-<up:11>-<up:5>-<up:5>-<up:5>", "\"A3<nil>-<up:6>-<up:6>-<up:5>-<up:5>-<up:5>-<up:5>\""], &["A3-XXXXXX-XXXXXXXXXXX-XXXXX-XXXXX-XXXXX", "A3-ABC"]),
    tok("readme-api-token", "rd<nil>me_", "<lo:70>"),
    tok("prefect-api-token", "pn<nil>u_", "<an:36>"),
    case("okta-api-token", &["OKTA_API_TOKEN=00<url:40>", "okta_token: \"00<url:40>\""], &["okta_domain = dev-123.okta.test", "OKTA_API_TOKEN=${OKTA_API_TOKEN}"]),
    kw("asana-client-secret", "ASANA_CLIENT_SECRET", "<lo:32>"),
    kw("beamer-api-token", "BEAMER_API_KEY", "b_<url:44>"),
    kw("adafruit-api-key", "ADAFRUIT_IO_KEY", "<lo:32>"),
    tok("adobe-client-secret", "p8<nil>e-", "<an:32>"),
    case("authress-access-key", &["AUTHRESS_KEY=sc<nil>auth_<lo:10>.<lo:5>.acc_<lo:16>.<b64:60>", "\"authress<nil>_<lo:10>.<lo:5>.acc-<lo:16>.<b64:60>\""], &["sc_short.acc", "scauth_x.y.acc_z.w"]),
    kw("fastly-api-token", "FASTLY_API_TOKEN", "<url:32>"),
    tok("frameio-api-token", "fio-<nil>u-", "<url:64>"),
    case_at("freemius-secret-key", "src/Freemius.php", &["'secret_key' => 'sk<nil>_<an:29>',", "\"secret_key\" => \"sk<nil>_<an:29>\""], &["'secret_key' => $secret,", "'secret_key' => 'sk_short',"]),
    tok("intra42-client-secret", "s-s4<nil>t2ud-", "<hex:64>"),
    case("maxmind-license-key", &["MAXMIND_LICENSE_KEY=<an:6>_<an:29>_m<nil>mk", "\"<an:6>_<an:29>_m<nil>mk\""], &["license_mmk", "abcdef_short_mmk"]),
    kw("rapidapi-access-token", "RAPIDAPI_KEY", "<url:50>"),
    tok("settlemint-token", "sm<nil>_pat_", "<an:16>"),
    case("sidekiq-secret", &["BUNDLE_ENTERPRISE__CONTRIB<nil>SYS__COM=<hex:8>:<hex:8>", "export BUNDLE_GEMS__CONTRIB<nil>SYS__COM=\"<hex:8>:<hex:8>\""], &["BUNDLE_GEMS__CONTRIBSYS__COM=${SIDEKIQ_CREDS}", "BUNDLE_GEMS__CONTRIBSYS__COM=00000000:00000000"]),
    case("sidekiq-sensitive-url", &["source \"https://<hex:8>:<hex:8>@gems.contrib<nil>sys.com/\"", "https://<hex:8>:<hex:8>@enterprise.contrib<nil>sys.com/"], &["source \"https://gems.contribsys.com/\"", "https://user:pass@gems.contribsys.com/"]),
    case("private-key", &["-----BEGIN RSA PRIV<nil>ATE KEY-----\n<b64:64>\n<b64:64>\n-----END RSA PRIV<nil>ATE KEY-----\n", "-----BEGIN OPENSSH PRIV<nil>ATE KEY-----\n<b64:70>\n<b64:70>\n-----END OPENSSH PRIV<nil>ATE KEY-----", "-----BEGIN EC PRIV<nil>ATE KEY-----\n<b64:64>\n<b64:20>\n-----END EC PRIV<nil>ATE KEY-----", "-----BEGIN DSA PRIV<nil>ATE KEY-----\n<b64:64>\n<b64:64>\n-----END DSA PRIV<nil>ATE KEY-----", "-----BEGIN ENCRYPTED PRIV<nil>ATE KEY-----\n<b64:64>\n<b64:64>\n-----END ENCRYPTED PRIV<nil>ATE KEY-----", "-----BEGIN PRIV<nil>ATE KEY-----\n<b64:64>\n<b64:64>\n-----END PRIV<nil>ATE KEY-----", "-----BEGIN PGP PRIV<nil>ATE KEY BLOCK-----\n\n<b64:64>\n<b64:64>\n-----END PGP PRIV<nil>ATE KEY BLOCK-----"], &["-----BEGIN PUBLIC KEY-----\n<b64:64>\n-----END PUBLIC KEY-----", "const HEADER: &str = \"-----BEGIN PRIV<nil>ATE KEY-----\";", "-----BEGIN CERTIFICATE-----\n<b64:64>\n<b64:64>\n-----END CERTIFICATE-----"]),
    case("putty-private-key", &["PuTTY-User-Key-<nil>File-3: ssh-ed25519\nEncryption: none\nComment: k\nPublic-Lines: 2\n<b64:64>\n<b64:20>\nPrivate-Lines: 1\n<b64:48>\n", "PuTTY-User-Key-<nil>File-2: ssh-rsa\nEncryption: none\nComment: rsa-key\nPublic-Lines: 1\n<b64:64>\nPrivate-Lines: 2\n<b64:64>\n<b64:64>\n"], &["PuTTY-User-Key-<nil>File-3: ssh-ed25519\n", "PuTTY-User-Key-File-3: ssh-ed25519\nPrivate-Lines: 1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"]),
    case("age-secret-key", &["AGE-SECRET-<nil>KEY-1<age:58>", "key = \"AGE-SECRET-<nil>KEY-1<age:58>\""], &["AGE-SECRET-<nil>KEY-1ABC", "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ"]),
    case("jwt", &["token: ey<nil>JhbGciOiJIUzI1NiJ9.ey<nil>J<url:40>.<url:43>", "Authorization: Bearer ey<nil>J<url:30>.ey<nil>J<url:60>.<url:43>"], &["header ey<nil>JhbGciOiJIUzI1NiJ9 only", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0"]),
    case("url-credentials", &["git clone https://bot:<an:20>@git.example.test/x.git", "proxy = \"http://proxyuser:<an:16>@proxy.internal:3128\""], &["https://user:password@host.test", "https://example.test/path", "ftp://anonymous:${FTP_PASS}@ftp.example.test/"]),
    case("authorization-header", &["-H 'Authorization: Bearer <url:40>'", "\"authorization\": \"token <an:40>\""], &["Authorization: Bearer $TOKEN", "Authorization: Bearer xxxxxxxxxxxxxxxxxxxxxxxxx"]),
    case("curl-basic-auth", &["curl -u deploy:<an:20> https://api.example.test/v1", "curl -s --user \"ci:<an:24>\" https://nexus.internal/repo"], &["curl -u user:password https://example.test", "curl -u \"$USER:$PASS\" https://example.test"]),
    case("netrc-password", &["machine api.example.test login bot password <an:20>", "machine git.internal\n  login ci\n  password <an:24>"], &["machine learning login page password reset", "machine api.example.test login bot password xxxxxxxx"]),
    case("generic-api-key", &["db_password = \"<an:24>\"", "const apiKey: string = '<an:32>';", "SECRET_TOKEN: <b64:40>"], &["password = \"changeme\"", "token_endpoint = \"/oauth/token\"", "secret_key_base = your_secret_key_here_123", "API_VERSION_KEY = config.settings.api_version", "api_key = os.environ[\"API_KEY\"]", "key = \"aaaaaaaaaaaaaaaaaaaa\""]),
    kw("gitter-access-token", "GITTER_TOKEN", "<url:40>"),
];

/// One rule's examples, expanded: (rule, path, true positives, false positives).
struct Expanded {
    rule: &'static str,
    path: &'static str,
    tp: Vec<String>,
    fp: Vec<String>,
}

fn expand_example(example: &Example, seed: u64) -> Expanded {
    match example {
        Example::Case { rule, path, tp, fp } => Expanded {
            rule,
            path,
            tp: (0..tp.len())
                .map(|i| expand(tp[i], seed * 20 + i as u64))
                .collect(),
            fp: (0..fp.len())
                .map(|i| expand(fp[i], seed * 20 + 10 + i as u64))
                .collect(),
        },
        Example::Tok { rule, prefix, body } => {
            let prefix = expand(prefix, 0);
            let body = expand(body, seed * 20);
            let short: String = body.chars().take(4).collect();
            Expanded {
                rule,
                path: PATH,
                tp: vec![
                    format!("token = \"{prefix}{body}\""),
                    format!("{{\"credential\": \"{prefix}{body}\"}}"),
                ],
                fp: vec![
                    format!("token = \"{prefix}{short}\""),
                    format!("token = \"{prefix}{}\"", placeholder(&body)),
                ],
            }
        }
        Example::Kw { rule, name, value } => {
            let value = expand(value, seed * 20);
            let var: String = name
                .chars()
                .map(|c| match c.is_ascii_alphanumeric() {
                    true => c.to_ascii_uppercase(),
                    false => '_',
                })
                .collect();
            Expanded {
                rule,
                path: PATH,
                tp: vec![
                    format!("{name} = \"{value}\""),
                    format!("export {name}={value}"),
                ],
                fp: vec![
                    format!("{name} = \"${{{var}}}\""),
                    format!("{name} = \"{}\"", placeholder(&value)),
                ],
            }
        }
    }
}

/// The same shape with every letter and digit an `x`.
fn placeholder(value: &str) -> String {
    value
        .chars()
        .map(|c| match c.is_ascii_alphanumeric() {
            true => 'x',
            false => c,
        })
        .collect()
}

/// Expands `<cls:N>` templates (and drops `<nil>`, which only breaks up literal prefixes).
fn expand(template: &str, seed: u64) -> String {
    let mut out = String::new();
    let mut rest = template;
    let mut n = 0u64;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('>') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let spec = &rest[open + 1..open + close];
        rest = &rest[open + close + 1..];
        if spec == "nil" {
            continue;
        }
        let Some((class, len)) = spec.split_once(':') else {
            out.push('<');
            out.push_str(spec);
            out.push('>');
            continue;
        };
        let charset = match class {
            "an" => ALNUM,
            "al" => "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
            "lo" => "abcdefghijklmnopqrstuvwxyz0123456789",
            "up" => "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
            "hex" => "0123456789abcdef",
            "HEX" => "0123456789ABCDEF",
            "ah" => "0123456789abcdefgh",
            "d" => "0123456789",
            "b64" => "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
            "url" => "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
            "b32" => "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567",
            "age" => "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L",
            other => panic!("unknown class {other} in {template}"),
        };
        let len: usize = len.parse().unwrap();
        n += 1;
        out.push_str(&fill(seed * 1000 + n, charset, len));
    }
    out.push_str(rest);
    out
}

fn rule_of(example: &Example) -> &'static str {
    match example {
        Example::Case { rule, .. } | Example::Tok { rule, .. } | Example::Kw { rule, .. } => rule,
    }
}

/// What a finding is, for comparing two scans.
fn shape(found: &[Finding]) -> Vec<(String, u32, u32, u32, String)> {
    let mut out: Vec<_> = found
        .iter()
        .map(|f| {
            (
                f.rule_id.clone(),
                f.start_line,
                f.start_column,
                f.end_column,
                f.secret.clone(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_builtin_rule_has_examples_and_they_hold() {
    let scanner = Scanner::builtin().unwrap();
    // Windows around keywords on every fragment, however small: the same findings, or a rule
    // has a match without its keyword or an unbounded regex where its keywords are short.
    let mut windowed = Scanner::builtin().unwrap();
    windowed.engine.set_windowed_above(0);
    let ids = scanner.rule_ids();
    let mut failures = Vec::new();
    for id in &ids {
        let n = EXAMPLES.iter().filter(|e| rule_of(e) == *id).count();
        if n != 1 {
            failures.push(format!("{id}: {n} example entries (want exactly one)"));
        }
    }
    for (i, example) in EXAMPLES.iter().enumerate() {
        let ex = expand_example(example, i as u64 + 1);
        if !ids.contains(&ex.rule) {
            failures.push(format!("{}: examples for an unknown rule", ex.rule));
        }
        if ex.tp.len() < 2 || ex.fp.len() < 2 {
            failures.push(format!(
                "{}: needs at least two true and two false positives",
                ex.rule
            ));
        }
        for (text, positive) in ex
            .tp
            .iter()
            .map(|t| (t, true))
            .chain(ex.fp.iter().map(|t| (t, false)))
        {
            let found = scanner.scan_text(ex.path, text.as_bytes());
            let fired = found.iter().any(|f| f.rule_id == ex.rule);
            if fired != positive {
                let got: Vec<&str> = found.iter().map(|f| f.rule_id.as_str()).collect();
                let what = match positive {
                    true => "missed true positive",
                    false => "false positive on",
                };
                failures.push(format!("{}: {what} {text:?} (got {got:?})", ex.rule));
            }
            let in_windows = windowed.scan_text(ex.path, text.as_bytes());
            if shape(&found) != shape(&in_windows) {
                failures.push(format!(
                    "{}: windowed scan differs on {text:?}: {:?} vs {:?}",
                    ex.rule,
                    shape(&found),
                    shape(&in_windows)
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Built-in rules whose regex may be unbounded: their keywords are long enough not to occur
/// in random data, so the rule seldom runs over a whole large fragment.
const UNBOUNDED_WITH_LONG_KEYWORDS: &[&str] = &["private-key"];

#[test]
fn builtin_rules_run_in_windows_or_have_long_keywords() {
    let scanner = Scanner::builtin().unwrap();
    let mut problems = Vec::new();
    for rule in &scanner.engine.rules().rules {
        if rule.keywords.is_empty() && rule.regex.is_some() {
            problems.push(format!("{}: no keywords", rule.id));
        }
        if rule.regex.is_some() && rule.window().is_none() {
            let short = rule.keywords.iter().any(|k| k.len() < 8);
            if short || !UNBOUNDED_WITH_LONG_KEYWORDS.contains(&rule.id.as_str()) {
                problems.push(format!("{}: unbounded regex", rule.id));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The README block listing the providers, between these markers.
const README_START: &str = "<!-- built-in providers: generated by `UPDATE_README=1 cargo test -p bottle-bundle builtin_providers` -->\n";
const README_END: &str = "<!-- end of built-in providers -->\n";

/// Providers, from the rules' "Provider: what" descriptions, with their rule counts.
fn providers(scanner: &Scanner) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = Vec::new();
    for rule in &scanner.engine.rules().rules {
        let Some((provider, _)) = rule.description.split_once(": ") else {
            panic!("{}: description is not \"Provider: what\"", rule.id);
        };
        match out.iter_mut().find(|(p, _)| p == provider) {
            Some((_, n)) => *n += 1,
            None => out.push((provider.to_owned(), 1)),
        }
    }
    out.sort_by_key(|(p, _)| p.to_lowercase());
    out
}

fn readme_block(scanner: &Scanner) -> String {
    let providers = providers(scanner);
    let list: Vec<String> = providers
        .iter()
        .map(|(p, n)| match n {
            1 => p.clone(),
            n => format!("{p} ({n})"),
        })
        .collect();
    let mut text = format!(
        "{} rules for {} providers (rules per provider in parentheses where more than one):\n\n",
        scanner.rule_count(),
        providers.len()
    );
    let mut line = String::new();
    for item in list {
        if !line.is_empty() && line.len() + item.len() + 2 > 96 {
            text.push_str(line.trim_end());
            text.push('\n');
            line.clear();
        }
        line.push_str(&item);
        line.push_str(", ");
    }
    text.push_str(line.trim_end_matches(", "));
    text.push_str(".\n");
    text
}

#[test]
fn builtin_providers_are_listed_in_the_readme() {
    let scanner = Scanner::builtin().unwrap();
    let providers = providers(&scanner);
    assert!(scanner.rule_count() >= 200, "{}", scanner.rule_count());
    assert!(providers.len() >= 140, "{}", providers.len());
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let start = readme
        .find(README_START)
        .expect("README lacks the providers block")
        + README_START.len();
    let end = start
        + readme[start..]
            .find(README_END)
            .expect("README lacks the block's end");
    let want = readme_block(&scanner);
    if readme[start..end] == want {
        return;
    }
    if std::env::var_os("UPDATE_README").is_some() {
        let updated = format!("{}{want}{}", &readme[..start], &readme[end..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    panic!(
        "README's built-in providers are stale; run UPDATE_README=1 cargo test -p bottle-bundle builtin_providers"
    );
}

/// Lines that look like credentials to a careless rule and are not: placeholders, variable
/// references, hashes and ids named as such, inline images, prose.
const NEAR_MISSES: &str = include_str!("near_misses.txt");

#[test]
fn near_misses_never_fire() {
    let scanner = Scanner::builtin().unwrap();
    let lines: Vec<&str> = NEAR_MISSES
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("#!"))
        .collect();
    assert!(lines.len() >= 100, "{}", lines.len());
    let mut fired = Vec::new();
    for line in &lines {
        for f in scanner.scan_text(PATH, line.as_bytes()) {
            fired.push(format!("{}: {line}", f.rule_id));
        }
    }
    let whole = scanner.scan_text(PATH, NEAR_MISSES.as_bytes());
    assert!(fired.is_empty() && whole.is_empty(), "{}", fired.join("\n"));
}
