# Replaces the starter cell of 08-secretless: the thumbprints of the certificates registered on the server's app.
import base64

app = await graph.applications.by_application_id(server_app.id).get()
registered = [base64.b64encode(key.custom_key_identifier).decode() for key in app.key_credentials or []]
print(len(app.key_credentials or []), "certificate(s) on the app, thumbprints:", registered)
