//! Every built-in rule with true- and false-positive examples, checked by one data-driven test.
//!
//! Examples are templates: `<cls:N>` expands to N deterministic pseudo-random characters of a
//! class, so no literal token appears in this file (push-protection scanners stay quiet).
//! Classes: `an` alnum, `al` letters, `lo` lower+digits, `up` upper+digits, `hex`, `HEX`,
//! `d` digits, `b64` base64, `url` base64url, `b32` A-Z2-7, `age` bech32 upper.

use super::{ALNUM, fill};
use crate::scanner::Scanner;

struct Case {
    rule: &'static str,
    tp: &'static [&'static str],
    fp: &'static [&'static str],
}

const fn case(
    rule: &'static str,
    tp: &'static [&'static str],
    fp: &'static [&'static str],
) -> Case {
    Case { rule, tp, fp }
}

#[rustfmt::skip]
const CASES: &[Case] = &[
    case("aws-access-key-id", &["aws_access_key_id = AK<nil>IA<b32:16>", "\"ASIA<b32:16>\""], &["AKIA<nil>IOSFODNN7EXAMPLE", "AKIA<nil>AAAAAAAAAAAAAAAA", "AKIA<b32:10>"]),
    case("aws-secret-access-key", &["aws_secret_access_key = <b64:40>", "AWS_SECRET_KEY: \"<b64:40>\""], &["aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCY<nil>EXAMPLEKEY", "aws_secret_access_key = <b64:20>"]),
    case("gcp-api-key", &["key: AI<nil>za<url:35>"], &["AI<nil>za<url:20>"]),
    case("gcp-service-account-key", &["  \"private_key_id\": \"<hex:40>\","], &["  \"private_key_id\": \"<hex:12>\","]),
    case("google-oauth-client-secret", &["client_secret=GOC<nil>SPX-<url:28>"], &["GOC<nil>SPX-xxxx"]),
    case("google-oauth-access-token", &["Authorization: ya<nil>29.<url:60>"], &["ya<nil>29.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]),
    case("azure-storage-account-key", &["DefaultEndpointsProtocol=https;AccountName=x;Account<nil>Key=<b64:86>==;EndpointSuffix=core"], &["Account<nil>Key=<redacted>"]),
    case("azure-ad-client-secret", &["client_secret = \"<an:3>8Q<nil>~<an:34>\""], &["see Q<nil>~ menu"]),
    case("azure-devops-pat", &["ADO_PAT=<an:76>AZ<nil>DO<an:4>"], &["ticket AZ<nil>DO-1234"]),
    case("alibaba-access-key-id", &["accessKeyId: LT<nil>AI<an:20>"], &["LT<nil>AIxxxxxxxxxxxxxxxxxxxx"]),
    case("digitalocean-pat", &["DO_TOKEN=dop<nil>_v1_<hex:64>"], &["dop<nil>_v1_0000000000000000000000000000000000000000000000000000000000000000"]),
    case("digitalocean-oauth-token", &["doo<nil>_v1_<hex:64>"], &["doo<nil>_v1_<hex:20>"]),
    case("digitalocean-refresh-token", &["dor<nil>_v1_<hex:64>"], &["dor<nil>_v1_<hex:20>"]),
    case("heroku-api-key", &["HEROKU_API_KEY=<hex:8>-<hex:4>-<hex:4>-<hex:4>-<hex:12>"], &["heroku_app_name = my-app"]),
    case("heroku-api-key-v2", &["HR<nil>KU-AA<url:58>"], &["HR<nil>KU-AAxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"]),
    case("cloudflare-origin-ca-key", &["v1.<nil>0-<hex:24>-<hex:146>"], &["version v1.<nil>0-beta"]),
    case("cloudflare-api-token", &["CLOUDFLARE_API_TOKEN=<url:40>"], &["cloudflare_zone = example.com"]),
    case("flyio-access-token", &["FLY_API_TOKEN=fo<nil>1_<url:43>"], &["fo<nil>1_short"]),
    case("supabase-access-token", &["sb<nil>p_<hex:40>"], &["sb<nil>p_0000000000000000000000000000000000000000"]),
    case("planetscale-token", &["pscale<nil>_tkn_<url:43>"], &["pscale<nil>_tkn_short"]),
    case("github-pat", &["export GITHUB_TOKEN=gh<nil>p_<an:36>"], &["gh<nil>p_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "gh<nil>p_<an:20>"]),
    case("github-fine-grained-pat", &["github<nil>_pat_<an:22>_<an:59>"], &["github<nil>_pat_<an:22>"]),
    case("github-oauth", &["gh<nil>o_<an:36>"], &["gh<nil>o_<an:12>"]),
    case("github-app-token", &["gh<nil>s_<an:36>", "gh<nil>u_<an:36>"], &["gh<nil>s_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"]),
    case("github-refresh-token", &["gh<nil>r_<an:76>"], &["gh<nil>r_<an:20>"]),
    case("gitlab-pat", &["GITLAB_TOKEN=gl<nil>pat-<url:20>"], &["gl<nil>pat-xxxxxxxxxxxxxxxxxxxx"]),
    case("gitlab-pipeline-trigger-token", &["gl<nil>ptt-<hex:40>"], &["gl<nil>ptt-<hex:10>"]),
    case("gitlab-runner-token", &["gl<nil>rt-<url:20>"], &["gl<nil>rt-xxxxxxxxxxxxxxxxxxxx"]),
    case("gitlab-deploy-token", &["gl<nil>dt-<url:20>"], &["gl<nil>dt-short"]),
    case("gitea-token", &["GITEA_TOKEN=<hex:40>", "forgejo_token: \"<hex:40>\""], &["gitea_url: https://gitea.example.test"]),
    case("atlassian-api-token", &["JIRA_TOKEN=ATA<nil>TT3<url:186>"], &["ATA<nil>TT3short"]),
    case("circleci-pat", &["CCI<nil>PAT_<an:22>_<hex:40>"], &["CCI<nil>PAT_<an:10>"]),
    case("buildkite-api-token", &["bk<nil>ua_<hex:40>"], &["bk<nil>ua_<hex:10>"]),
    case("hashicorp-tf-api-token", &["token = \"<an:14>.atlas<nil>v1.<url:64>\""], &["foo.atlas<nil>v1.bar"]),
    case("vault-service-token", &["VAULT_TOKEN=hv<nil>s.<url:95>"], &["hv<nil>s.<url:20>"]),
    case("vault-batch-token", &["hv<nil>b.<url:150>"], &["hv<nil>b.<url:40>"]),
    case("pulumi-api-token", &["PULUMI_ACCESS_TOKEN=pu<nil>l-<hex:40>"], &["pu<nil>l-<hex:10>"]),
    case("doppler-api-token", &["dp.<nil>pt.<an:43>"], &["dp.<nil>pt.short"]),
    case("docker-hub-pat", &["dckr<nil>_pat_<url:27>"], &["dckr<nil>_pat_short"]),
    case("sentry-user-token", &["sntr<nil>yu_<hex:64>"], &["sntr<nil>yu_<hex:10>"]),
    case("sentry-org-token", &["SENTRY_AUTH_TOKEN=sntr<nil>ys_eyJ<b64:80>"], &["sntr<nil>ys_eyJshort"]),
    case("dynatrace-api-token", &["dt0<nil>c01.<up:24>.<up:64>"], &["dt0<nil>c01.<up:10>"]),
    case("databricks-api-token", &["DATABRICKS_TOKEN=da<nil>pi<hex:32>"], &["da<nil>pi00000000000000000000000000000000"]),
    case("grafana-cloud-api-token", &["gl<nil>c_<b64:48>"], &["gl<nil>c_<b64:12>"]),
    case("grafana-service-account-token", &["gl<nil>sa_<an:32>_<hex:8>"], &["gl<nil>sa_<an:10>"]),
    case("new-relic-user-api-key", &["NR<nil>AK-<up:27>"], &["NR<nil>AK-<up:10>"]),
    case("postman-api-token", &["PM<nil>AK-<hex:24>-<hex:34>"], &["PM<nil>AK-<hex:24>"]),
    case("npm-access-token", &["//npm.example.test/:_authToken=np<nil>m_<an:36>"], &["np<nil>m_config_registry=https://npm.example.test/"]),
    case("pypi-upload-token", &["password = py<nil>pi-AgEIcHlwaS5vcmc<url:70>"], &["py<nil>pi-AgEIcHlwaS5vcmcshort"]),
    case("rubygems-api-token", &["rubygems<nil>_<hex:48>"], &["rubygems<nil>_<hex:10>"]),
    case("clojars-api-token", &["CLOJARS<nil>_<lo:60>"], &["CLOJARS<nil>_<lo:10>"]),
    case("npmrc-auth-token", &["//npm.example.test/:_auth<nil>Token=<an:36>"], &["//npm.example.test/:_auth<nil>Token=${NPM_TOKEN}"]),
    case("slack-bot-token", &["SLACK_BOT_TOKEN=xo<nil>xb-<d:12>-<d:13>-<an:24>"], &["xo<nil>xb-123-456-abc"]),
    case("slack-user-token", &["xo<nil>xp-<d:12>-<d:12>-<d:12>-<hex:32>"], &["xo<nil>xp-1234"]),
    case("slack-app-token", &["xa<nil>pp-1-<up:11>-<d:13>-<hex:64>"], &["xa<nil>pp-1-foo"]),
    case("slack-webhook-url", &["url: https://hooks.sl<nil>ack.com/services/T<up:8>/B<up:10>/<an:24>"], &["https://hooks.sl<nil>ack.com/services/T000/B000/XXXX"]),
    case("discord-webhook-url", &["https://disc<nil>ord.com/api/webhooks/<d:18>/<url:68>"], &["https://disc<nil>ord.com/api/webhooks/123/abc"]),
    case("telegram-bot-token", &["TELEGRAM_BOT_TOKEN=<d:10>:A<nil>A<url:33>"], &["time 12:A<nil>A"]),
    case("twilio-api-key", &["TWILIO_API_KEY=S<nil>K<hex:32>"], &["S<nil>K00000000000000000000000000000000"]),
    case("sendgrid-api-token", &["SG<nil>.<url:22>.<url:43>"], &["SG<nil>.short"]),
    case("mailgun-api-key", &["MAILGUN_KEY=ke<nil>y-<hex:32>"], &["ke<nil>y-00000000000000000000000000000000"]),
    case("mailchimp-api-key", &["<hex:32>-u<nil>s12"], &["locale en-u<nil>s"]),
    case("stripe-secret-key", &["STRIPE_KEY=sk<nil>_live_<an:24>", "rk<nil>_test_<an:24>"], &["sk<nil>_test_xxxxxxxxxxxxxxxxxxxxxxxx"]),
    case("stripe-webhook-secret", &["wh<nil>sec_<an:32>"], &["wh<nil>sec_<an:10>"]),
    case("square-access-token", &["sq0<nil>atp-<url:22>"], &["EA<nil>AAbc"]),
    case("square-oauth-secret", &["sq0<nil>csp-<url:43>"], &["sq0<nil>csp-short"]),
    case("shopify-access-token", &["shp<nil>at_<hex:32>"], &["shp<nil>at_<hex:10>"]),
    case("shopify-shared-secret", &["shp<nil>ss_<hex:32>"], &["shp<nil>ss_<hex:10>"]),
    case("shippo-api-token", &["shippo<nil>_live_<hex:40>"], &["shippo<nil>_live_<hex:10>"]),
    case("facebook-access-token", &["FB_TOKEN=EA<nil>AC<an:120>"], &["EA<nil>ACshort"]),
    case("twitter-bearer-token", &["BEARER=AAAAAAAAAAA<nil>AAAAAAAAAAA<an:90>"], &["AAAAAAAAAAA<nil>AAAAAAAAAAAshort"]),
    case("anthropic-api-key", &["ANTHROPIC_API_KEY=sk-<nil>ant-api03-<url:93>AA"], &["sk-<nil>ant-api03-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxAA", "sk-<nil>ant-api03-<url:20>"]),
    case("anthropic-admin-key", &["sk-<nil>ant-admin01-<url:93>AA"], &["sk-<nil>ant-admin01-<url:20>"]),
    case("openai-api-key", &["OPENAI_API_KEY=sk-<nil>proj-<url:74>T3Blb<nil>kFJ<url:74>", "sk-<nil><an:20>T3Blb<nil>kFJ<an:20>"], &["sk-<nil>proj-abc", "T3Blb<nil>kFJ"]),
    case("huggingface-access-token", &["HF_TOKEN=h<nil>f_<al:34>"], &["h<nil>f_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "h<nil>f_hub_download"]),
    case("groq-api-key", &["gs<nil>k_<an:52>"], &["gs<nil>k_<an:10>"]),
    case("xai-api-key", &["xa<nil>i-<an:80>"], &["xa<nil>i-<an:10>"]),
    case("perplexity-api-key", &["pp<nil>lx-<an:48>"], &["pp<nil>lx-<an:10>"]),
    case("replicate-api-token", &["REPLICATE_API_TOKEN=r<nil>8_<an:37>"], &["r<nil>8_<an:10>"]),
    case("openrouter-api-key", &["sk-<nil>or-v1-<hex:64>"], &["sk-<nil>or-v1-<hex:10>"]),
    case("langsmith-api-key", &["lsv<nil>2_pt_<hex:32>_<hex:10>"], &["lsv<nil>2_pt_<hex:10>"]),
    case("linear-api-key", &["lin<nil>_api_<an:40>"], &["lin<nil>_api_<an:10>"]),
    case("notion-integration-token", &["nt<nil>n_<d:11><an:35>"], &["nt<nil>n_<d:11>"]),
    case("airtable-pat", &["pa<nil>t<an:14>.<hex:64>"], &["pattern.match"]),
    case("contentful-pat", &["CFP<nil>AT-<url:43>"], &["CFP<nil>AT-short"]),
    case("typeform-api-token", &["tf<nil>p_<url:59>"], &["tf<nil>p_short"]),
    case("mapbox-secret-token", &["s<nil>k.eyJ<url:60>.<url:22>"], &["s<nil>k.eyJshort"]),
    case("onepassword-service-account-token", &["OP_SERVICE_ACCOUNT_TOKEN=op<nil>s_eyJ<b64:260>"], &["op<nil>s_eyJshort"]),
    case("readme-api-token", &["rd<nil>me_<lo:70>"], &["rd<nil>me_<lo:10>"]),
    case("prefect-api-token", &["pn<nil>u_<an:36>"], &["pn<nil>u_<an:10>"]),
    case("okta-api-token", &["OKTA_API_TOKEN=00<url:40>"], &["okta_domain = dev-123.okta.test"]),
    case("datadog-api-key", &["DD_API_KEY=<hex:32>", "datadog_app_key: '<hex:40>'"], &["DD_API_KEY=${DD_API_KEY}"]),
    case("snyk-api-token", &["SNYK_TOKEN=<hex:8>-<hex:4>-<hex:4>-<hex:4>-<hex:12>"], &["run snyk test --all-projects"]),
    case("private-key", &["-----BEGIN RSA PRIV<nil>ATE KEY-----\n<b64:64>\n<b64:64>\n-----END RSA PRIV<nil>ATE KEY-----\n", "-----BEGIN OPENSSH PRIV<nil>ATE KEY-----\n<b64:70>\n<b64:70>\n-----END OPENSSH PRIV<nil>ATE KEY-----"], &["-----BEGIN PUBLIC KEY-----\n<b64:64>\n-----END PUBLIC KEY-----", "const HEADER: &str = \"-----BEGIN PRIV<nil>ATE KEY-----\";"]),
    case("putty-private-key", &["PuTTY-User-Key-<nil>File-3: ssh-ed25519\nEncryption: none\nComment: k\nPublic-Lines: 2\n<b64:64>\n<b64:20>\nPrivate-Lines: 1\n<b64:48>\n"], &["PuTTY-User-Key-<nil>File-3: ssh-ed25519\n"]),
    case("age-secret-key", &["AGE-SECRET-<nil>KEY-1<age:58>"], &["AGE-SECRET-<nil>KEY-1ABC"]),
    case("jwt", &["token: ey<nil>JhbGciOiJIUzI1NiJ9.ey<nil>J<url:40>.<url:43>"], &["header ey<nil>JhbGciOiJIUzI1NiJ9 only"]),
    case("url-credentials", &["DATABASE_URL=postgres://app:<an:16>@db.internal:5432/app", "git clone https://bot:<an:20>@git.example.test/x.git"], &["postgres://app:${DB_PASSWORD}@db/app", "https://user:password@host.test", "https://example.test/path"]),
    case("authorization-header", &["-H 'Authorization: Bearer <url:40>'", "\"authorization\": \"token <an:40>\""], &["Authorization: Bearer $TOKEN", "Authorization: Bearer xxxxxxxxxxxxxxxxxxxxxxxxx"]),
    case("netrc-password", &["machine api.example.test login bot password <an:20>"], &["machine learning login page password reset"]), // gitleaks:allow (templates)
    case("generic-api-key", &["db_password = \"<an:24>\"", "const apiKey: string = '<an:32>';", "SECRET_TOKEN: <b64:40>"], &["password = \"changeme\"", "token_endpoint = \"/oauth/token\"", "secret_key_base = your_secret_key_here_123", "API_VERSION_KEY = config.settings.api_version", "api_key = os.environ[\"API_KEY\"]", "key = \"aaaaaaaaaaaaaaaaaaaa\""]),
];

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

#[test]
fn every_builtin_rule_has_examples_and_they_hold() {
    let scanner = Scanner::builtin().unwrap();
    let ids = scanner.rule_ids();
    let mut failures = Vec::new();
    for id in &ids {
        if !CASES.iter().any(|c| c.rule == *id) {
            failures.push(format!("{id}: no examples"));
        }
    }
    for (ci, case) in CASES.iter().enumerate() {
        if !ids.contains(&case.rule) {
            failures.push(format!("{}: examples for an unknown rule", case.rule));
        }
        if case.tp.is_empty() || case.fp.is_empty() {
            failures.push(format!(
                "{}: needs both true and false positives",
                case.rule
            ));
        }
        for (ei, tpl) in case.tp.iter().enumerate() {
            let text = expand(tpl, (ci * 10 + ei) as u64 + 1);
            let found = scanner.scan_text("src/config.txt", text.as_bytes());
            if !found.iter().any(|f| f.rule_id == case.rule) {
                let got: Vec<&str> = found.iter().map(|f| f.rule_id.as_str()).collect();
                failures.push(format!(
                    "{}: missed true positive {tpl:?} (got {got:?})",
                    case.rule
                ));
            }
        }
        for (ei, tpl) in case.fp.iter().enumerate() {
            let text = expand(tpl, (ci * 10 + ei) as u64 + 500);
            let found = scanner.scan_text("src/config.txt", text.as_bytes());
            if found.iter().any(|f| f.rule_id == case.rule) {
                failures.push(format!("{}: false positive on {tpl:?}", case.rule));
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
